//! Reconcile scenarios against a mocked API server that checks every request in order
//! (method, path, field manager, body) and fails on a missing or an extra one; Kafka is
//! a recording stand-in behind the operator's `Kafka` trait (with an in-memory control
//! topic the handoff driver reads and writes), and the pods' metrics pages come from a
//! stand-in behind its `Fetch` trait, read by the autoscaler loops that the tests tick
//! by hand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use gameshard_control::{Acquired, Assignment, Message, PodPartitions};
use gameshard_crds::{GameShard, GameShardStatus};
use gameshard_operator::controller::{self, Context};
use gameshard_operator::metrics::Metrics;
use gameshard_operator::scaler::Pacing;
use gameshard_operator::signals::{Fetch, FetchError};
use gameshard_operator::topics::{
    Cluster, ControlLink, ControlRecord, Kafka, KafkaError, Opener, TopicSpec,
};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

/// Kafka as a test wants it: topic counts to answer, an in-memory control topic, and
/// what was asked of it.
#[derive(Default)]
struct FakeKafka {
    counts: Mutex<Option<Result<Vec<Option<i32>>, KafkaError>>>,
    created: Mutex<Vec<TopicSpec>>,
    control: Mutex<Vec<ControlRecord>>,
    appended: tokio::sync::Notify,
    calls: Mutex<usize>,
}

impl FakeKafka {
    fn with(counts: Result<Vec<Option<i32>>, KafkaError>) -> Self {
        Self { counts: Mutex::new(Some(counts)), ..Self::default() }
    }

    fn append(&self, key: String, value: Option<Vec<u8>>) {
        let mut control = self.control.lock().unwrap();
        let offset = control.len() as i64;
        control.push(ControlRecord { offset, key: key.into_bytes(), value });
        self.appended.notify_waiters();
    }

    fn write(&self, message: &Message) {
        self.append(message.key(), Some(message.value()));
    }

    /// The assignments published on the control topic so far.
    fn assignments(&self) -> Vec<Assignment> {
        self.control
            .lock()
            .unwrap()
            .iter()
            .filter_map(|r| match Message::decode(&r.key, r.value.as_deref()?) {
                Ok(Some(Message::Assignment(a))) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// Waits until the control topic holds an assignment of `epoch`.
    async fn published(&self, epoch: u64) -> Assignment {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let notified = self.appended.notified();
                if let Some(a) = self.assignments().into_iter().find(|a| a.epoch == epoch) {
                    return a;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no assignment of epoch {epoch}: {:?}", self.assignments()))
    }
}

/// The stand-in the context owns; the test keeps the other handle.
struct Fake(Arc<FakeKafka>);

impl std::ops::Deref for Fake {
    type Target = FakeKafka;
    fn deref(&self) -> &FakeKafka {
        &self.0
    }
}

impl Kafka for Fake {
    async fn partitions(
        &self,
        _: &Cluster,
        topics: &[String],
    ) -> Result<Vec<Option<i32>>, KafkaError> {
        *self.calls.lock().unwrap() += 1;
        let counts =
            self.counts.lock().unwrap().clone().expect("the test says what Kafka holds")?;
        assert_eq!(counts.len(), topics.len(), "asked for {topics:?}");
        Ok(counts)
    }

    async fn create(&self, _: &Cluster, topics: &[TopicSpec]) -> Result<(), KafkaError> {
        *self.calls.lock().unwrap() += 1;
        self.created.lock().unwrap().extend_from_slice(topics);
        Ok(())
    }

    fn control(&self, _: &Cluster, topic: &str) -> Opener {
        assert_eq!(topic, "zone.control");
        let kafka = Arc::clone(&self.0);
        Arc::new(move || {
            let kafka = Arc::clone(&kafka);
            Box::pin(async move {
                let end = kafka.control.lock().unwrap().len() as i64;
                Ok(Box::new(Link { kafka, next: 0, end }) as Box<dyn ControlLink>)
            })
        })
    }

    async fn tombstones(
        &self,
        _: &Cluster,
        topic: &str,
        keys: &[String],
    ) -> Result<(), KafkaError> {
        assert_eq!(topic, "zone.control");
        *self.calls.lock().unwrap() += 1;
        for key in keys {
            self.append(key.clone(), None);
        }
        Ok(())
    }
}

/// The in-memory control topic, read from its start.
struct Link {
    kafka: Arc<FakeKafka>,
    next: usize,
    end: i64,
}

impl ControlLink for Link {
    fn end(&self) -> i64 {
        self.end
    }

    fn next(&mut self) -> BoxFuture<'_, Result<ControlRecord, KafkaError>> {
        Box::pin(async move {
            loop {
                let notified = self.kafka.appended.notified();
                if let Some(r) = self.kafka.control.lock().unwrap().get(self.next).cloned() {
                    self.next += 1;
                    return Ok(r);
                }
                notified.await;
            }
        })
    }

    fn publish(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<(), KafkaError>> {
        Box::pin(async move {
            self.kafka.append(key, Some(value));
            Ok(())
        })
    }
}

/// Metrics pages per URL, handed out in order; a URL with none left refuses.
#[derive(Default)]
struct Pages {
    pages: Mutex<std::collections::HashMap<String, Vec<String>>>,
    asked: Mutex<Vec<String>>,
}

/// The stand-in the context owns.
#[derive(Clone)]
struct FakeScrape(Arc<Pages>);

impl Fetch for FakeScrape {
    async fn get(&self, url: &str) -> Result<String, FetchError> {
        self.0.asked.lock().unwrap().push(url.to_owned());
        let mut pages = self.0.pages.lock().unwrap();
        match pages.get_mut(url) {
            Some(queue) if !queue.is_empty() => Ok(queue.remove(0)),
            _ => Err(FetchError::Failed(url.to_owned(), "connection refused".to_owned())),
        }
    }
}

fn shard(generation: i64, extra: Value) -> GameShard {
    let mut v = json!({
        "apiVersion": "gameshard.io/v1alpha1",
        "kind": "GameShard",
        "metadata": {"name": "zone", "namespace": "game", "uid": "1111", "generation": generation, "finalizers": ["gameshard.io/cleanup"]},
        "spec": {
            "kafka": {"bootstrapServers": "kafka:9092", "inputTopic": "in", "outputTopic": "out", "deadLetterTopic": "dead"},
            "partitionsPerPod": 8,
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("a valid GameShard")
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// The mocked API server: expects requests one by one. It holds the StatefulSet's
/// status between requests, as a real one does: an apply never changes it, and it
/// changes only when the test says the StatefulSet controller rolled out what the
/// operator applied ([`ApiServer::rolled_out`]).
struct ApiServer {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    /// The StatefulSet's status (`Null`: none yet).
    statefulset: Value,
    /// `spec.replicas` of the StatefulSet the operator applied last.
    applied_replicas: i64,
}

impl ApiServer {
    /// Takes the next request, checks its method and path, and returns its body.
    async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Value, String, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = self
            .handle
            .next_request()
            .await
            .unwrap_or_else(|| panic!("no request; expected {method} {path}"));
        assert_eq!(request.method(), method, "{} {}", request.method(), request.uri());
        assert_eq!(request.uri().path(), path);
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (body, query, send)
    }

    /// A server-side apply of `path`, answered as an API server does: the object as
    /// applied, with `status`, the status the server held (a new StatefulSet holds
    /// `{"replicas": 0}`: no controller has acted on it yet).
    async fn apply(&mut self, path: &str, status: Value) -> Value {
        let (mut body, query, send) = self.expect(Method::PATCH, path).await;
        assert!(
            query.contains("fieldManager=gameshard-operator") && query.contains("force=true"),
            "{query}"
        );
        let sent = body.clone();
        if !status.is_null() {
            body["status"] = status;
        }
        send.send_response(Response::new(Body::from(serde_json::to_vec(&body).unwrap())));
        sent
    }

    /// The StatefulSet's apply, answered with the object as applied and the status the
    /// server holds; returns the object sent.
    async fn apply_statefulset(&mut self) -> Value {
        let held = self.statefulset.clone();
        let sent = self.apply(STS, held).await;
        self.applied_replicas = sent["spec"]["replicas"].as_i64().expect("spec.replicas");
        sent
    }

    /// What the StatefulSet controller and the kubelets make of the StatefulSet applied
    /// last, before the next request: every pod created from its template, `ready` of
    /// them ready.
    fn rolled_out(&mut self, ready: i64) {
        let n = self.applied_replicas;
        self.statefulset =
            json!({"replicas": n, "updatedReplicas": n, "readyReplicas": ready.min(n)});
    }

    /// The server already holds a StatefulSet of `replicas` pods, all at its template
    /// and ready, from the spec before the test's.
    fn holding(mut self, replicas: i64) -> Self {
        self.applied_replicas = replicas;
        self.rolled_out(replicas);
        self
    }

    /// The status apply: answered with the whole resource carrying the new status.
    async fn apply_status(&mut self) -> Value {
        let (body, query, send) = self.expect(Method::PATCH, STATUS).await;
        assert!(
            query.contains("fieldManager=gameshard-operator") && query.contains("force=true"),
            "{query}"
        );
        let mut whole = serde_json::to_value(shard(1, json!({}))).unwrap();
        whole["status"] = body["status"].clone();
        send.send_response(Response::new(Body::from(serde_json::to_vec(&whole).unwrap())));
        body
    }

    /// A Kubernetes Event posted; returns its reason.
    async fn event(&mut self) -> String {
        let (body, _, send) =
            self.expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/game/events").await;
        let reason = body["reason"].as_str().unwrap_or_default().to_owned();
        send.send_response(Response::new(Body::from(serde_json::to_vec(&body).unwrap())));
        reason
    }

    /// The list of the shard's pods, answered with `ready` of them Ready.
    async fn pods(&mut self, ready: &[&str], not_ready: &[&str]) {
        let (_, query, send) = self.expect(Method::GET, PODS).await;
        assert!(query.contains("labelSelector="), "{query}");
        // Pod zone-N has IP 10.0.0.N+1.
        let pod = |name: &str, ready: bool| {
            let n: u32 = name.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(99);
            json!({"metadata": {"name": name}, "status": {"podIP": format!("10.0.0.{}", n + 1), "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]}})
        };
        let items: Vec<Value> = ready
            .iter()
            .map(|p| pod(p, true))
            .chain(not_ready.iter().map(|p| pod(p, false)))
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items});
        send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));
    }

    /// The next request, answered with the API error `code` (`reason` in its Status).
    async fn fail(&mut self, method: Method, path: &str, code: u16, reason: &str) {
        let (_, _, send) = self.expect(method, path).await;
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason});
        let response = Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&status).unwrap()));
        send.send_response(response.unwrap());
    }

    /// The next request, failed in transport: no answer came in time.
    async fn time_out(&mut self, method: Method, path: &str) {
        let (_, _, send) = self.expect(method, path).await;
        send.send_error(std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"));
    }

    /// A JSON patch of the shard itself (its finalizers): returns the patch.
    async fn patch_shard(&mut self) -> Value {
        let (body, _, send) = self.expect(Method::PATCH, SHARD).await;
        let whole = serde_json::to_value(shard(1, json!({}))).unwrap();
        send.send_response(Response::new(Body::from(serde_json::to_vec(&whole).unwrap())));
        body
    }

    /// A GET answered 404.
    async fn get_missing(&mut self, path: &str) {
        let (_, _, send) = self.expect(Method::GET, path).await;
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        let response = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from(serde_json::to_vec(&status).unwrap()));
        send.send_response(response.unwrap());
    }

    /// A GET answered with `object`.
    async fn get(&mut self, path: &str, object: Value) {
        let (_, _, send) = self.expect(Method::GET, path).await;
        send.send_response(Response::new(Body::from(serde_json::to_vec(&object).unwrap())));
    }

    /// Asserts no further request comes.
    async fn silent(mut self) {
        let next =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

const STS: &str = "/apis/apps/v1/namespaces/game/statefulsets/zone";
const SVC: &str = "/api/v1/namespaces/game/services/zone";
const SVC_METRICS: &str = "/api/v1/namespaces/game/services/zone-metrics";
const PDB: &str = "/apis/policy/v1/namespaces/game/poddisruptionbudgets/zone";
const STATUS: &str = "/apis/gameshard.io/v1alpha1/namespaces/game/gameshards/zone/status";
const SHARD: &str = "/apis/gameshard.io/v1alpha1/namespaces/game/gameshards/zone";
const PODS: &str = "/api/v1/namespaces/game/pods";

type Ctx = Context<Fake, FakeScrape>;

fn setup(kafka: FakeKafka) -> (Arc<Ctx>, Arc<FakeKafka>, ApiServer) {
    let (ctx, kafka, server, _) = setup_with_pages(kafka, Pages::default());
    (ctx, kafka, server)
}

fn setup_with_pages(
    kafka: FakeKafka,
    pages: Pages,
) -> (Arc<Ctx>, Arc<FakeKafka>, ApiServer, Arc<Pages>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "game");
    let kafka = Arc::new(kafka);
    let pages = Arc::new(pages);
    let ctx = Context::new(
        client,
        Fake(Arc::clone(&kafka)),
        FakeScrape(Arc::clone(&pages)),
        Metrics::new(),
        "dataplane:test".into(),
        false,
        controller::reporter(Some("test".into())),
    )
    .with_pacing(Pacing::Manual);
    let server = ApiServer { handle, statefulset: Value::Null, applied_replicas: 0 };
    (Arc::new(ctx), kafka, server, pages)
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

/// Runs one reconciliation while `script` answers its requests; hands the server back.
async fn step<F, Fut>(
    shard: GameShard,
    ctx: &Arc<Ctx>,
    server: ApiServer,
    script: F,
) -> (Action, ApiServer)
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
{
    let script = tokio::spawn(script(server));
    let action =
        controller::reconcile(Arc::new(shard), Arc::clone(ctx)).await.expect("reconcile succeeds");
    let server = tokio::time::timeout(Duration::from_secs(5), script)
        .await
        .expect("every expected request came")
        .expect("script passed");
    (action, server)
}

/// Waits until the shard's handoff driver has read the control topic's history.
async fn caught_up(ctx: &Ctx) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !ctx.drivers.seen("game", "zone").is_some_and(|s| s.caught_up) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the driver reads the control topic");
}

/// Waits until the driver has read the assignment of `epoch`.
async fn seen_epoch(ctx: &Ctx, epoch: u64) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while ctx.drivers.seen("game", "zone").is_none_or(|s| s.log.epoch() < epoch) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the driver reads the assignment");
}

/// The rest of a served reconciliation after the StatefulSet: Services, budget, Events,
/// status; returns the status sent.
async fn after_statefulset(server: &mut ApiServer, events: &[&str]) -> Value {
    server.apply(SVC, Value::Null).await;
    server.apply(SVC_METRICS, Value::Null).await;
    server.apply(PDB, Value::Null).await;
    for want in events {
        assert_eq!(server.event().await, *want);
    }
    server.apply_status().await["status"].clone()
}

fn pod_assignment(epoch: u64, pods: &[(&str, std::ops::Range<u32>)]) -> Message {
    Message::Assignment(Assignment {
        shard: "zone".into(),
        epoch,
        partitions: 16,
        pods: pods
            .iter()
            .map(|(pod, r)| PodPartitions { pod: (*pod).into(), partitions: r.clone().collect() })
            .collect(),
        moves: Vec::new(),
    })
}

const ALL_TOPICS: [Option<i32>; 5] = [Some(16), Some(16), Some(16), Some(1), Some(16)];

/// `s` as a later pass sees it: its generation applied, `replicas` pods reported.
fn applied(mut s: GameShard, replicas: i32) -> GameShard {
    s.status = Some(GameShardStatus {
        observed_generation: s.metadata.generation,
        replicas,
        partitions: Some(16),
        ..GameShardStatus::default()
    });
    s
}

#[tokio::test]
async fn a_new_shard_gets_the_cleanup_finalizer_before_anything_else() {
    let (ctx, kafka, server) = setup(FakeKafka::default());
    let mut s = shard(1, json!({}));
    s.metadata.finalizers = None;
    let (action, server) = step(s, &ctx, server, |mut server| async move {
        let patch = server.patch_shard().await;
        let text = patch.to_string();
        assert!(
            text.contains("/metadata/finalizers") && text.contains("gameshard.io/cleanup"),
            "{text}"
        );
        server
    })
    .await;
    server.silent().await;
    assert_eq!(action, Action::await_change());
    assert_eq!(*kafka.calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn create_makes_topics_applies_and_publishes_the_first_assignment() {
    let kafka = FakeKafka::with(Ok(vec![Some(16), None, None, None, None]));
    let (ctx, kafka, server) = setup(kafka);
    // The first pass creates the topics and the objects; the driver reads the (empty)
    // control topic meanwhile.
    let (action, server) = step(shard(1, json!({})), &ctx, server, |mut server| async move {
        assert_eq!(server.event().await, "TopicsCreated");
        let sts = server.apply_statefulset().await;
        assert_eq!(sts["spec"]["replicas"], 2, "16 partitions at 8 per pod");
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["requests"], container["resources"]["limits"]);
        assert_eq!(container["resources"]["requests"]["cpu"], "2");
        assert_eq!(sts["metadata"]["ownerReferences"][0]["uid"], "1111");
        let args: Vec<&str> =
            container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(args.windows(2).any(|w| w == ["--control-topic", "zone.control"]), "{args:?}");
        let status = after_statefulset(&mut server, &["Applied"]).await;
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["replicas"], 2);
        assert_eq!(status["selector"], "app.kubernetes.io/component=dataplane,app.kubernetes.io/instance=zone,app.kubernetes.io/name=gameshard");
        assert_eq!(condition(&status, "Ready")["reason"], "PodsNotReady");
        // The StatefulSet was just created: none of its pods exists yet.
        assert_eq!(condition(&status, "Progressing")["status"], "True");
        assert_eq!(condition(&status, "Progressing")["message"], "0 of 2 pods updated, 0 ready", "{status}");
        assert_eq!(condition(&status, "Degraded")["status"], "False");
        assert_eq!(status["partitions"], 16);
        server
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)), "soon again: nothing assigned yet");
    let created: Vec<(String, i32)> =
        kafka.created.lock().unwrap().iter().map(|t| (t.name.clone(), t.partitions)).collect();
    assert_eq!(
        created,
        [
            ("out".into(), 16),
            ("zone.snapshots".into(), 16),
            ("zone.control".into(), 1),
            ("dead".into(), 16)
        ]
    );

    // Once the driver has read the topic, the first assignment goes to both pods at
    // once (neither is ready before it has one), without moves.
    caught_up(&ctx).await;
    *kafka.counts.lock().unwrap() = Some(Ok(ALL_TOPICS.to_vec()));
    let (_, server) =
        step(applied(shard(1, json!({})), 2), &ctx, server, |mut server| async move {
            // Both pods run the template applied; neither is ready without an assignment.
            server.rolled_out(0);
            server.apply_statefulset().await;
            after_statefulset(&mut server, &[]).await;
            server
        })
        .await;
    let first = kafka.published(1).await;
    assert!(first.moves.is_empty());
    assert_eq!(first.partitions_of("zone-0"), (0..8).collect::<Vec<_>>());
    assert_eq!(first.partitions_of("zone-1"), (8..16).collect::<Vec<_>>());

    // The status then shows it, read back from the topic.
    seen_epoch(&ctx, 1).await;
    let (action, server) =
        step(applied(shard(1, json!({})), 2), &ctx, server, |mut server| async move {
            server.pods(&["zone-0", "zone-1"], &[]).await;
            server.rolled_out(2);
            server.apply_statefulset().await;
            let status = after_statefulset(&mut server, &[]).await;
            assert_eq!(status["assignmentEpoch"], 1);
            assert_eq!(
                status["assignment"][1],
                json!({"pod": "zone-1", "partitions": (8..16).collect::<Vec<_>>()})
            );
            assert_eq!(status["handoffsInFlight"], 0);
            assert_eq!(condition(&status, "Ready")["status"], "True");
            assert_eq!(condition(&status, "Progressing")["reason"], "UpToDate");
            server
        })
        .await;
    server.silent().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(kafka.assignments().len(), 1, "nothing more to publish");
}

#[tokio::test]
async fn a_scale_up_waits_for_every_new_pod_then_moves_partitions_one_at_a_time() {
    let kafka = FakeKafka::with(Ok(ALL_TOPICS.to_vec()));
    kafka.write(&pod_assignment(3, &[("zone-0", 0..8), ("zone-1", 8..16)]));
    let (ctx, kafka, server) = setup(kafka);
    let server = server.holding(2);
    let four = || shard(2, json!({"spec": {"replicas": 4}}));
    // The driver has not read the topic yet: the StatefulSet grows, nothing moves. The
    // server answers with the two pods it holds: the new ones do not exist yet.
    let (_, server) = step(four(), &ctx, server, |mut server| async move {
        let sts = server.apply_statefulset().await;
        assert_eq!(sts["spec"]["replicas"], 4);
        let status = after_statefulset(&mut server, &["Applied"]).await;
        assert_eq!(condition(&status, "Progressing")["reason"], "RollingOut");
        assert_eq!(condition(&status, "Progressing")["message"], "2 of 4 pods updated, 2 ready");
        server
    })
    .await;
    caught_up(&ctx).await;
    // zone-2 is ready, zone-3 is not: nothing moves yet, so that no partition moves
    // to zone-2 now and again to zone-3 later.
    let (action, server) = step(applied(four(), 4), &ctx, server, |mut server| async move {
        server.pods(&["zone-0", "zone-1", "zone-2"], &["zone-3"]).await;
        server.rolled_out(3);
        server.apply_statefulset().await;
        let status = after_statefulset(&mut server, &[]).await;
        assert_eq!(
            condition(&status, "Progressing")["reason"],
            "RollingOut",
            "zone-3 is not ready"
        );
        server
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)), "the pods' readiness wakes it");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(kafka.assignments().len(), 1, "no move while a new pod is not ready");

    // Every pod is ready: partitions move to the new ones, one at a time.
    let (action, server) = step(applied(four(), 4), &ctx, server, |mut server| async move {
        server.pods(&["zone-0", "zone-1", "zone-2", "zone-3"], &[]).await;
        server.rolled_out(4);
        server.apply_statefulset().await;
        after_statefulset(&mut server, &[]).await;
        server
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let first = kafka.published(4).await;
    assert_eq!(first.moves.len(), 1);
    let m = first.moves[0].clone();
    assert!(["zone-2", "zone-3"].contains(&m.to.as_str()), "{m:?}");
    assert_eq!(m.epoch, 4);
    assert_eq!(first.owner_of(m.partition), Some(m.to.as_str()));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(kafka.assignments().len(), 2, "the next move waits for the acknowledgement");

    kafka.write(&Message::Acquired(Acquired {
        shard: "zone".into(),
        partition: m.partition,
        epoch: 4,
        pod: m.to.clone(),
        next_offset: 0,
        acquired_ms: 0,
    }));
    let second = kafka.published(5).await;
    assert_eq!(second.moves.len(), 1, "the acknowledged move left the list");
    assert!(["zone-2", "zone-3"].contains(&second.moves[0].to.as_str()), "{second:?}");
    seen_epoch(&ctx, 5).await;
    let (_, server) = step(applied(four(), 4), &ctx, server, |mut server| async move {
        server.pods(&["zone-0", "zone-1", "zone-2", "zone-3"], &[]).await;
        server.rolled_out(4);
        server.apply_statefulset().await;
        let status = after_statefulset(&mut server, &[]).await;
        assert_eq!(status["assignmentEpoch"], 5);
        assert_eq!(status["handoffsInFlight"], 1);
        assert_eq!(condition(&status, "Progressing")["reason"], "Rebalancing");
        server
    })
    .await;
    server.silent().await;
}

#[tokio::test]
async fn a_scale_down_keeps_a_pod_until_its_partitions_have_left() {
    let kafka = FakeKafka::with(Ok(ALL_TOPICS.to_vec()));
    kafka.write(&pod_assignment(7, &[("zone-0", 0..6), ("zone-1", 6..11), ("zone-2", 11..16)]));
    let (ctx, kafka, server) = setup(kafka);
    Box::pin(caught_up_after_first(&ctx, &kafka, server.holding(3))).await;
}

/// The scale-down scenario after its setup: a first pass starts the driver, then every
/// pass runs three pods until zone-2 has handed over its five partitions.
async fn caught_up_after_first(ctx: &Arc<Ctx>, kafka: &Arc<FakeKafka>, server: ApiServer) {
    let two = || shard(3, json!({"spec": {"replicas": 2}}));
    let pass = |running: i32, events: &'static [&'static str]| {
        move |mut server: ApiServer| async move {
            if events.is_empty() {
                server.pods(&["zone-0", "zone-1", "zone-2"], &[]).await;
            }
            let sts = server.apply_statefulset().await;
            assert_eq!(sts["spec"]["replicas"], running);
            server.rolled_out(running.into());
            let status = after_statefulset(&mut server, events).await;
            if events.is_empty() {
                assert_eq!(condition(&status, "Progressing")["reason"], "Rebalancing");
            }
            server
        }
    };
    // The spec changed (generation 3) while three pods run.
    let mut changed = applied(two(), 3);
    changed.status.as_mut().expect("status").observed_generation = Some(2);
    let (_, mut server) = step(changed, ctx, server, pass(3, &["Applied"])).await;
    caught_up(ctx).await;
    let mut epoch = 7;
    for _ in 0..5 {
        let (_, s) = step(applied(two(), 3), ctx, server, pass(3, &[])).await;
        server = s;
        epoch += 1;
        let a = kafka.published(epoch).await;
        let m = a.moves.iter().find(|m| m.epoch == epoch).expect("one move per assignment").clone();
        assert_eq!(m.from, "zone-2", "only the leaving pod gives partitions away");
        kafka.write(&Message::Acquired(Acquired {
            shard: "zone".into(),
            partition: m.partition,
            epoch,
            pod: m.to.clone(),
            next_offset: 0,
            acquired_ms: 0,
        }));
        seen_epoch(ctx, epoch).await;
    }
    let last = kafka.assignments().pop().unwrap();
    assert!(last.partitions_of("zone-2").is_empty());
    // With zone-2 empty the StatefulSet shrinks to two pods.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (action, server) = step(applied(two(), 3), ctx, server, |mut server| async move {
        server.pods(&["zone-0", "zone-1", "zone-2"], &[]).await;
        let sts = server.apply_statefulset().await;
        assert_eq!(sts["spec"]["replicas"], 2);
        let status = after_statefulset(&mut server, &["Scaled"]).await;
        assert_eq!(status["replicas"], 2);
        server
    })
    .await;
    server.silent().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
}

#[tokio::test]
async fn a_paused_shard_is_only_observed() {
    let (ctx, kafka, server) = setup(FakeKafka::default());
    let (_, server) = step(shard(5, json!({"spec": {"paused": true}})), &ctx, server, |mut server| async move {
        server
            .get(STS, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "zone"}, "spec": {"replicas": 3, "selector": {}, "serviceName": "zone", "template": {}}, "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3}}))
            .await;
        let status = server.apply_status().await["status"].clone();
        assert_eq!(condition(&status, "Progressing")["reason"], "Paused");
        assert_eq!(condition(&status, "Ready")["status"], "True");
        assert_eq!(status["replicas"], 3);
        server
    })
    .await;
    server.silent().await;
    assert_eq!(*kafka.calls.lock().unwrap(), 0, "nothing asked of Kafka while paused");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_degraded_condition_not_a_crash() {
    let (ctx, kafka, server) =
        setup(FakeKafka::with(Err(KafkaError::Unreachable("kafka:9092".into()))));
    let (action, server) = step(shard(1, json!({})), &ctx, server, |mut server| async move {
        server.get_missing(STS).await;
        assert_eq!(server.event().await, "BrokerUnreachable");
        let status = server.apply_status().await["status"].clone();
        assert_eq!(condition(&status, "Degraded")["status"], "True");
        assert_eq!(condition(&status, "Degraded")["reason"], "BrokerUnreachable");
        assert_eq!(condition(&status, "Ready")["status"], "False");
        server
    })
    .await;
    server.silent().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert!(kafka.assignments().is_empty());
}

#[tokio::test]
async fn refused_credentials_are_a_degraded_condition_that_names_the_setting() {
    let refused = KafkaError::Security {
        setting: "sasl.password".into(),
        message: "SASL authentication failed for sasl.username \"zone\"".into(),
    };
    let (ctx, kafka, server) = setup(FakeKafka::with(Err(refused)));
    let (_, server) = step(shard(1, json!({})), &ctx, server, |mut server| async move {
        server.get_missing(STS).await;
        assert_eq!(server.event().await, "KafkaAuthenticationFailed");
        let status = server.apply_status().await["status"].clone();
        let degraded = condition(&status, "Degraded");
        assert_eq!(degraded["status"], "True");
        assert_eq!(degraded["reason"], "KafkaAuthenticationFailed");
        let message = degraded["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.starts_with("sasl.password: "), "names the setting: {message}");
        server
    })
    .await;
    server.silent().await;
    assert!(kafka.assignments().is_empty());
}

#[tokio::test]
async fn a_partition_mismatch_is_reported_and_nothing_is_applied() {
    let (ctx, _kafka, server) = setup(FakeKafka::with(Ok(ALL_TOPICS.to_vec())));
    let (_, server) = step(
        shard(1, json!({"spec": {"partitions": 32}})),
        &ctx,
        server,
        |mut server| async move {
            server.get_missing(STS).await;
            assert_eq!(server.event().await, "PartitionMismatch");
            let status = server.apply_status().await["status"].clone();
            assert_eq!(condition(&status, "Degraded")["reason"], "PartitionMismatch");
            assert!(condition(&status, "Degraded")["message"].as_str().unwrap().contains("32"));
            server
        },
    )
    .await;
    server.silent().await;
}

#[tokio::test]
async fn deleting_a_shard_clears_its_control_topic_messages_then_its_finalizer() {
    let (ctx, kafka, server) = setup(FakeKafka::default());
    let mut s = shard(1, json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
    s.status = Some(GameShardStatus { partitions: Some(2), ..GameShardStatus::default() });
    let (action, server) = step(s, &ctx, server, |mut server| async move {
        let patch = server.patch_shard().await;
        assert!(patch.to_string().contains("remove"), "the finalizer goes: {patch}");
        server
    })
    .await;
    server.silent().await;
    assert_eq!(action, Action::await_change());
    let tombstones: Vec<String> = kafka
        .control
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| String::from_utf8(r.key.clone()).unwrap())
        .collect();
    assert_eq!(
        tombstones,
        [
            "assignment/zone",
            "release/zone/0",
            "acquired/zone/0",
            "release/zone/1",
            "acquired/zone/1"
        ]
    );
}

/// A histogram page as the data plane serves it: cumulative counts at 1 ms, 2 ms, +Inf.
fn latency_page(within_1ms: u64, within_2ms: u64, total: u64) -> String {
    let h = "gameshard_event_latency_seconds";
    format!(
        "# TYPE {h} histogram\n\
         {h}_bucket{{shard=\"zone\",le=\"0.001\"}} {within_1ms}\n\
         {h}_bucket{{shard=\"zone\",le=\"0.002\"}} {within_2ms}\n\
         {h}_bucket{{shard=\"zone\",le=\"+Inf\"}} {total}\n\
         {h}_count{{shard=\"zone\"}} {total}\n"
    )
}

const SCALE: &str = "/apis/gameshard.io/v1alpha1/namespaces/game/gameshards/zone/scale";

/// The shard's pods as the autoscaler lists them: `pods[i]` Running at 10.0.0.(i+1).
async fn running_pods(server: &mut ApiServer, pods: &[&str]) {
    let (_, query, send) = server.expect(Method::GET, PODS).await;
    assert!(query.contains("labelSelector="), "{query}");
    let items: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"metadata": {"name": name}, "status": {"phase": "Running", "podIP": format!("10.0.0.{}", i + 1)}})
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items});
    send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));
}

/// The autoscaler's write to the scale subresource: returns its body and query.
async fn patch_scale(server: &mut ApiServer) -> (Value, String) {
    let (body, query, send) = server.expect(Method::PATCH, SCALE).await;
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "zone", "namespace": "game"}, "spec": body["spec"].clone(), "status": {"replicas": 2}});
    send.send_response(Response::new(Body::from(serde_json::to_vec(&scale).unwrap())));
    (body, query)
}

/// A two-pod shard of 16 partitions whose autoscaler runs in `mode`, with a 1 ms target,
/// no up window and no cooldown: one breaching interval is a decision.
fn autoscaled(generation: i64, mode: &str, replicas: i32) -> GameShard {
    let mut s = applied(
        shard(
            generation,
            json!({"spec": {"replicas": replicas, "latency": {"p99TargetMs": 1.0}, "autoscaling": {
                "mode": mode, "scaleUpWindowSeconds": 0, "cooldownSeconds": 0, "maxReplicas": 8,
            }}}),
        ),
        2,
    );
    s.status.as_mut().expect("status").observed_generation = Some(1);
    s
}

/// One served pass in which the operator applies a StatefulSet of `replicas` pods;
/// returns the status written.
async fn served(
    s: GameShard,
    ctx: &Arc<Ctx>,
    server: ApiServer,
    replicas: i32,
    events: &'static [&'static str],
) -> (Value, ApiServer) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (_, server) = Box::pin(step(s, ctx, server, move |mut server| async move {
        // The first pass finds the StatefulSet of `replicas` pods the shard ran before;
        // later ones, every pod of the spec applied last up and ready.
        if server.applied_replicas == 0 {
            server = server.holding(replicas.into());
        }
        server.rolled_out(i64::MAX);
        let sts = server.apply_statefulset().await;
        assert_eq!(sts["spec"]["replicas"], replicas);
        tx.send(after_statefulset(&mut server, events).await).unwrap();
        server
    }))
    .await;
    (rx.await.unwrap(), server)
}

/// Ticks the shard's autoscaler at `at` seconds while `script` answers its requests.
async fn tick<F, Fut>(ctx: &Arc<Ctx>, server: ApiServer, at: u64, script: F) -> ApiServer
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ApiServer> + Send + 'static,
{
    let script = tokio::spawn(script(server));
    let report = ctx.scalers.tick("game", "zone", Duration::from_secs(at)).await;
    assert!(report.is_some(), "the shard's autoscaler runs");
    tokio::time::timeout(Duration::from_secs(5), script)
        .await
        .expect("every expected request came")
        .expect("script passed")
}

/// Pages for zone-0 and zone-1: nothing, then 1,000 updates on zone-0 with a p99 of
/// 1.98 ms (500 within 1 ms, the rest within 2 ms).
fn breaching_pages() -> Pages {
    let pages = Pages::default();
    pages.pages.lock().unwrap().extend([
        (
            "http://10.0.0.1:9100/metrics".to_owned(),
            vec![latency_page(0, 0, 0), latency_page(500, 1000, 1000)],
        ),
        (
            "http://10.0.0.2:9100/metrics".to_owned(),
            vec![latency_page(0, 0, 0), latency_page(0, 0, 0)],
        ),
    ]);
    pages
}

fn decisions(ctx: &Ctx, direction: &str, reason: &str) -> u64 {
    let series = format!(
        "gameshard_operator_scale_decisions_total{{direction=\"{direction}\",reason=\"{reason}\",shard=\"zone\",shard_namespace=\"game\"}} "
    );
    ctx.metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.parse().unwrap())
}

#[tokio::test]
async fn an_auto_decision_patches_the_scale_subresource_and_the_status_shows_it() {
    let (ctx, _kafka, server, pages) =
        setup_with_pages(FakeKafka::with(Ok(ALL_TOPICS.to_vec())), breaching_pages());
    // The first pass starts the shard's autoscaler, which has not evaluated yet.
    let (status, server) = served(autoscaled(1, "Auto", 2), &ctx, server, 2, &[]).await;
    assert_eq!(condition(&status, "ScalingLimited")["status"], "Unknown");
    assert_eq!(status["observedP99"], Value::Null);
    // Its first reading is the pods' first sample; the second sees the breach and
    // writes 4 replicas through the scale subresource, with its own field manager.
    let server = tick(&ctx, server, 15, |mut server| async move {
        running_pods(&mut server, &["zone-0", "zone-1"]).await;
        server
    })
    .await;
    let server = tick(&ctx, server, 30, |mut server| async move {
        running_pods(&mut server, &["zone-0", "zone-1"]).await;
        let (body, query) = patch_scale(&mut server).await;
        assert_eq!(body, json!({"spec": {"replicas": 4}}));
        assert!(query.contains("fieldManager=gameshard-autoscaler"), "{query}");
        assert_eq!(server.event().await, "ScaledUp");
        server
    })
    .await;
    assert_eq!(pages.asked.lock().unwrap().len(), 4, "two pods read twice");
    assert_eq!(decisions(&ctx, "up", "LatencyAboveTarget"), 1);
    assert!(
        ctx.metrics.render().contains(
            "gameshard_operator_observed_p99_seconds{shard=\"zone\",shard_namespace=\"game\"} 0.00198"
        ),
        "{}",
        ctx.metrics.render()
    );
    // The API server now holds spec.replicas 4: the next pass grows the StatefulSet and
    // shows the decision.
    let (status, server) =
        served(autoscaled(2, "Auto", 4), &ctx, server, 4, &["Applied", "Scaled"]).await;
    server.silent().await;
    assert_eq!(status["desiredReplicas"], 4);
    assert_eq!(status["observedP99"], "2.0ms");
    assert_eq!(status["observedP99Ms"], 1.98);
    assert!(status["lastScaleTime"].is_string(), "{status}");
    let decision = status["lastScaleDecision"].as_str().unwrap();
    assert!(decision.contains("2 to 4 pods"), "{decision}");
    assert_eq!(condition(&status, "SLOBreached")["status"], "True");
    assert_eq!(condition(&status, "SLOBreached")["reason"], "LatencyAboveTarget");
    assert_eq!(condition(&status, "ScalingLimited")["status"], "False");
    assert_eq!(condition(&status, "ScalingLimited")["observedGeneration"], 2);
}

#[tokio::test]
async fn a_recommendation_is_written_to_status_only() {
    let (ctx, _kafka, server, _pages) =
        setup_with_pages(FakeKafka::with(Ok(ALL_TOPICS.to_vec())), breaching_pages());
    let (_, server) = served(autoscaled(1, "Recommend", 2), &ctx, server, 2, &[]).await;
    let server = tick(&ctx, server, 15, |mut server| async move {
        running_pods(&mut server, &["zone-0", "zone-1"]).await;
        server
    })
    .await;
    // The same breach: an Event and the count, but no write to the scale subresource.
    let server = tick(&ctx, server, 30, |mut server| async move {
        running_pods(&mut server, &["zone-0", "zone-1"]).await;
        assert_eq!(server.event().await, "RecommendScaleUp");
        server
    })
    .await;
    assert_eq!(decisions(&ctx, "up", "LatencyAboveTarget"), 1);
    let (status, server) = served(autoscaled(1, "Recommend", 2), &ctx, server, 2, &[]).await;
    server.silent().await;
    assert_eq!(status["replicas"], 2, "the StatefulSet stays at two pods");
    assert_eq!(status["desiredReplicas"], 4);
    assert_eq!(status["lastScaleTime"], Value::Null, "nothing was scaled");
    assert!(status["lastScaleDecision"].as_str().unwrap().contains("2 to 4 pods"));
    assert_eq!(condition(&status, "SLOBreached")["status"], "True");
}

#[tokio::test]
async fn unreadable_pods_freeze_the_autoscaler_and_the_status_says_why() {
    let (ctx, _kafka, server, _pages) =
        setup_with_pages(FakeKafka::with(Ok(ALL_TOPICS.to_vec())), Pages::default());
    let (_, server) = served(autoscaled(1, "Auto", 2), &ctx, server, 2, &[]).await;
    // Neither pod answers: the freeze is announced once, and nothing is scaled.
    let mut server = server;
    for at in [15, 30] {
        server = tick(&ctx, server, at, move |mut server| async move {
            running_pods(&mut server, &["zone-0", "zone-1"]).await;
            if at == 15 {
                assert_eq!(server.event().await, "MetricsMissing");
            }
            server
        })
        .await;
    }
    let (status, server) = served(autoscaled(1, "Auto", 2), &ctx, server, 2, &[]).await;
    server.silent().await;
    let limited = condition(&status, "ScalingLimited");
    assert_eq!(
        (limited["status"].as_str(), limited["reason"].as_str()),
        (Some("True"), Some("MetricsMissing"))
    );
    assert!(limited["message"].as_str().unwrap().contains("connection refused"), "{limited}");
    assert_eq!(condition(&status, "SLOBreached")["status"], "Unknown");
    assert_eq!(status["desiredReplicas"], 2, "it holds");
    assert_eq!(status["observedP99"], Value::Null);
}

/// The failure counter's value for shard game/zone and `reason`.
fn failures(ctx: &Ctx, reason: &str) -> u64 {
    let page = ctx.metrics.render();
    let series = format!(
        "gameshard_operator_reconcile_failures_total{{reason=\"{reason}\",shard=\"zone\",shard_namespace=\"game\"}} "
    );
    page.lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.parse().expect("a count"))
}

/// Runs one reconciliation that must fail, against `server`'s script.
async fn reconcile_failing<F>(
    shard: GameShard,
    ctx: Arc<Ctx>,
    script: F,
) -> gameshard_operator::Error
where
    F: Future<Output = ()> + Send + 'static,
{
    let server = tokio::spawn(script);
    let error =
        Box::pin(controller::reconcile(Arc::new(shard), ctx)).await.expect_err("reconcile fails");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("every expected request came")
        .expect("script passed");
    error
}

#[tokio::test]
async fn a_conflicting_apply_fails_the_reconcile_and_counts_a_conflict_for_the_shard() {
    let (ctx, _kafka, mut server) = setup(FakeKafka::with(Ok(ALL_TOPICS.to_vec())));
    let s = applied(shard(1, json!({})), 2);
    let error = reconcile_failing(s.clone(), Arc::clone(&ctx), async move {
        server.fail(Method::PATCH, STS, 409, "Conflict").await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "Conflict");
    assert_eq!(failures(&ctx, "Conflict"), 1, "{}", ctx.metrics.render());
    assert_eq!(
        controller::error_policy(Arc::new(s), &error, ctx),
        Action::requeue(Duration::from_secs(15)),
        "retried soon"
    );
}

#[tokio::test]
async fn a_server_error_on_the_status_counts_an_api_error_after_the_children_are_applied() {
    let (ctx, _kafka, mut server) = setup(FakeKafka::with(Ok(ALL_TOPICS.to_vec())));
    let error = reconcile_failing(applied(shard(1, json!({})), 2), Arc::clone(&ctx), async move {
        server.apply_statefulset().await;
        server.apply(SVC, Value::Null).await;
        server.apply(SVC_METRICS, Value::Null).await;
        server.apply(PDB, Value::Null).await;
        server.fail(Method::PATCH, STATUS, 503, "ServiceUnavailable").await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "ApiError");
    assert_eq!(failures(&ctx, "ApiError"), 1);
    assert_eq!(failures(&ctx, "Conflict"), 0);
}

#[tokio::test]
async fn a_request_that_times_out_counts_the_api_as_unreachable() {
    let (ctx, _kafka, mut server) = setup(FakeKafka::with(Ok(ALL_TOPICS.to_vec())));
    let error = reconcile_failing(applied(shard(1, json!({})), 2), Arc::clone(&ctx), async move {
        server.apply_statefulset().await;
        server.time_out(Method::PATCH, SVC).await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "ApiUnreachable");
    assert_eq!(failures(&ctx, "ApiUnreachable"), 1);
}

#[tokio::test]
async fn a_forbidden_secret_counts_forbidden_and_kafka_is_not_asked() {
    let (ctx, kafka, mut server) = setup(FakeKafka::with(Ok(ALL_TOPICS.to_vec())));
    let s =
        applied(shard(1, json!({"spec": {"kafka": {"credentialsSecret": {"name": "creds"}}}})), 2);
    let error = reconcile_failing(s, Arc::clone(&ctx), async move {
        server.fail(Method::GET, "/api/v1/namespaces/game/secrets/creds", 403, "Forbidden").await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "Forbidden");
    assert_eq!(failures(&ctx, "Forbidden"), 1);
    assert_eq!(*kafka.calls.lock().unwrap(), 0, "Kafka is not asked without its credentials");
}
