//! Reconcile scenarios against a mocked API server that checks every request in order
//! (method, path, field manager, body) and fails on a missing or an extra one; Kafka is
//! a recording stand-in behind the operator's `Kafka` trait, and the pods' metrics
//! pages come from a stand-in behind its `Scrape` trait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gameshard_crds::{GameShard, GameShardStatus, PodAssignment};
use gameshard_operator::controller::{self, Context};
use gameshard_operator::latency::Scrape;
use gameshard_operator::metrics::Metrics;
use gameshard_operator::topics::{Cluster, Kafka, KafkaError, TopicSpec};
use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

/// Kafka as a test wants it: topic counts to answer, and what was asked of it.
#[derive(Default)]
struct FakeKafka {
    counts: Mutex<Option<Result<Vec<Option<i32>>, KafkaError>>>,
    created: Mutex<Vec<TopicSpec>>,
    published: Mutex<Vec<(String, Value)>>,
    calls: Mutex<usize>,
}

impl FakeKafka {
    fn with(counts: Result<Vec<Option<i32>>, KafkaError>) -> Self {
        Self { counts: Mutex::new(Some(counts)), ..Self::default() }
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

    async fn publish(
        &self,
        _: &Cluster,
        topic: &str,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), KafkaError> {
        *self.calls.lock().unwrap() += 1;
        assert_eq!(key, b"assignment");
        self.published
            .lock()
            .unwrap()
            .push((topic.to_owned(), serde_json::from_slice(value).unwrap()));
        Ok(())
    }
}

/// Metrics pages per pod host, handed out in order; a host with none left refuses.
#[derive(Default)]
struct Pages {
    pages: Mutex<std::collections::HashMap<String, Vec<String>>>,
    asked: Mutex<Vec<String>>,
}

/// The stand-in the context owns.
struct FakeScrape(Arc<Pages>);

impl Scrape for FakeScrape {
    async fn metrics(&self, host: &str, port: u16) -> Result<String, String> {
        assert_eq!(port, 9100, "the data plane's admin port");
        self.0.asked.lock().unwrap().push(host.to_owned());
        let mut pages = self.0.pages.lock().unwrap();
        match pages.get_mut(host) {
            Some(queue) if !queue.is_empty() => Ok(queue.remove(0)),
            _ => Err(format!("{host}: connection refused")),
        }
    }
}

fn shard(generation: i64, extra: Value) -> GameShard {
    let mut v = json!({
        "apiVersion": "gameshard.io/v1alpha1",
        "kind": "GameShard",
        "metadata": {"name": "zone", "namespace": "game", "uid": "1111", "generation": generation},
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

/// The mocked API server: expects requests one by one.
struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Takes the next request, checks its method and path, and returns its body.
    async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Value, String, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = self
            .0
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
    /// applied, with the status the server held before (`stored`), or, for an object the
    /// apply creates, the status a new StatefulSet starts with (nothing ready, nothing
    /// updated: no controller has acted on it yet).
    async fn apply(&mut self, path: &str, stored: Option<Value>) -> Value {
        let (mut body, query, send) = self.expect(Method::PATCH, path).await;
        assert!(
            query.contains("fieldManager=gameshard-operator") && query.contains("force=true"),
            "{query}"
        );
        let sent = body.clone();
        if body["kind"] == "StatefulSet" {
            body["status"] =
                stored.unwrap_or_else(|| json!({"replicas": 0, "availableReplicas": 0}));
        }
        send.send_response(Response::new(Body::from(serde_json::to_vec(&body).unwrap())));
        sent
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

    /// The list of the shard's pods (by their labels), answered with `items`.
    async fn pods(&mut self, items: Value) {
        let (_, query, send) = self.expect(Method::GET, PODS).await;
        assert!(
            query.contains("labelSelector=app.kubernetes.io%2Fcomponent%3Ddataplane"),
            "{query}"
        );
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items});
        send.send_response(Response::new(Body::from(serde_json::to_vec(&list).unwrap())));
    }

    /// Asserts no further request comes.
    async fn silent(mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await;
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
    );
    (Arc::new(ctx), kafka, ApiServer(handle), pages)
}

/// Runs one reconciliation against `server`'s script.
async fn reconcile<F>(shard: GameShard, ctx: Arc<Ctx>, script: F) -> Action
where
    F: Future<Output = ()> + Send + 'static,
{
    let server = tokio::spawn(script);
    let action = controller::reconcile(Arc::new(shard), ctx).await.expect("reconcile succeeds");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("every expected request came")
        .expect("script passed");
    action
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn create_makes_topics_publishes_the_assignment_applies_and_reports() {
    let kafka = FakeKafka::with(Ok(vec![Some(16), None, None, None, None]));
    let (ctx, kafka, mut server) = setup(kafka);
    let action = reconcile(shard(1, json!({})), Arc::clone(&ctx), async move {
        assert_eq!(server.event().await, "TopicsCreated");
        assert_eq!(server.event().await, "AssignmentPublished");
        let sts = server.apply(STS, None).await;
        assert_eq!(sts["spec"]["replicas"], 2, "16 partitions at 8 per pod");
        let container = &sts["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["requests"], container["resources"]["limits"]);
        assert_eq!(container["resources"]["requests"]["cpu"], "2");
        assert_eq!(sts["metadata"]["ownerReferences"][0]["uid"], "1111");
        let args: Vec<&str> =
            container["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(args.windows(2).any(|w| w == ["--control-topic", "zone.control"]), "{args:?}");
        server.apply(SVC, None).await;
        server.apply(SVC_METRICS, None).await;
        server.apply(PDB, None).await;
        assert_eq!(server.event().await, "Applied");
        let patch = server.apply_status().await;
        let status = &patch["status"];
        assert_eq!(status["observedGeneration"], 1);
        assert_eq!(status["replicas"], 2);
        assert_eq!(status["assignmentEpoch"], 1);
        assert_eq!(
            status["assignment"][1],
            json!({"pod": "zone-1", "partitions": [8, 9, 10, 11, 12, 13, 14, 15]})
        );
        assert_eq!(condition(status, "Ready")["status"], "False");
        assert_eq!(condition(status, "Ready")["reason"], "PodsNotReady");
        // The StatefulSet was just created: none of its pods exists yet.
        assert_eq!(condition(status, "Progressing")["status"], "True");
        assert_eq!(condition(status, "Progressing")["reason"], "RollingOut");
        assert_eq!(condition(status, "Progressing")["message"], "0 of 2 pods updated, 0 ready");
        assert_eq!(condition(status, "Degraded")["status"], "False");
        assert_eq!(status["partitions"], 16);
        server.silent().await;
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
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
    let published = kafka.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].0, "zone.control");
    assert_eq!(published[0].1["epoch"], 1);
    assert_eq!(published[0].1["pods"][0]["partitions"], json!([0, 1, 2, 3, 4, 5, 6, 7]));
}

#[tokio::test]
async fn a_spec_change_rescales_republishes_and_keeps_transition_times() {
    let mut s = shard(2, json!({"spec": {"partitionsPerPod": 4}}));
    let ready_since = "2026-01-01T00:00:00Z";
    s.status = Some(GameShardStatus {
        observed_generation: Some(1),
        replicas: 2,
        ready_replicas: 2,
        partitions: Some(16),
        assignment_epoch: Some(3),
        assignment: vec![
            PodAssignment { pod: "zone-0".into(), partitions: (0..8).collect() },
            PodAssignment { pod: "zone-1".into(), partitions: (8..16).collect() },
        ],
        conditions: serde_json::from_value(json!([
            {"type": "Degraded", "status": "False", "reason": "AsSpecified", "message": "", "lastTransitionTime": ready_since},
        ]))
        .unwrap(),
        ..GameShardStatus::default()
    });
    let (ctx, kafka, mut server) =
        setup(FakeKafka::with(Ok(vec![Some(16), Some(16), Some(16), Some(1), Some(16)])));
    reconcile(s, ctx, async move {
        assert_eq!(server.event().await, "AssignmentPublished");
        // The server held the two ready pods of the previous spec.
        let before = json!({"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2});
        let sts = server.apply(STS, Some(before)).await;
        assert_eq!(sts["spec"]["replicas"], 4);
        server.apply(SVC, None).await;
        server.apply(SVC_METRICS, None).await;
        server.apply(PDB, None).await;
        assert_eq!(server.event().await, "Applied");
        assert_eq!(server.event().await, "Scaled");
        server.pods(json!([])).await;
        let patch = server.apply_status().await;
        let status = &patch["status"];
        assert_eq!(status["observedGeneration"], 2);
        assert_eq!(status["assignmentEpoch"], 4);
        assert_eq!(status["assignment"].as_array().unwrap().len(), 4);
        assert_eq!(
            condition(status, "Degraded")["lastTransitionTime"],
            ready_since,
            "unchanged status keeps its time"
        );
        assert_eq!(condition(status, "Progressing")["reason"], "RollingOut");
        server.silent().await;
    })
    .await;
    assert!(kafka.created.lock().unwrap().is_empty(), "every topic exists");
    assert_eq!(kafka.published.lock().unwrap()[0].1["epoch"], 4);
}

#[tokio::test]
async fn a_paused_shard_is_only_observed() {
    let (ctx, kafka, mut server) = setup(FakeKafka::default());
    reconcile(shard(5, json!({"spec": {"paused": true}})), ctx, async move {
        server
            .get(STS, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "zone"}, "spec": {"replicas": 3, "selector": {}, "serviceName": "zone", "template": {}}, "status": {"replicas": 3, "readyReplicas": 3, "updatedReplicas": 3}}))
            .await;
        server.pods(json!([])).await;
        let patch = server.apply_status().await;
        let status = &patch["status"];
        assert_eq!(condition(status, "Progressing")["reason"], "Paused");
        assert_eq!(condition(status, "Ready")["status"], "True");
        assert_eq!(status["replicas"], 3);
        server.silent().await;
    })
    .await;
    assert_eq!(*kafka.calls.lock().unwrap(), 0, "nothing asked of Kafka while paused");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_degraded_condition_not_a_crash() {
    let (ctx, kafka, mut server) =
        setup(FakeKafka::with(Err(KafkaError::Unreachable("kafka:9092".into()))));
    let action = reconcile(shard(1, json!({})), ctx, async move {
        server.get_missing(STS).await;
        assert_eq!(server.event().await, "BrokerUnreachable");
        let patch = server.apply_status().await;
        let status = &patch["status"];
        assert_eq!(condition(status, "Degraded")["status"], "True");
        assert_eq!(condition(status, "Degraded")["reason"], "BrokerUnreachable");
        assert_eq!(condition(status, "Ready")["status"], "False");
        server.silent().await;
    })
    .await;
    assert_eq!(action, Action::requeue(Duration::from_secs(15)));
    assert!(kafka.published.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_partition_mismatch_is_reported_and_nothing_is_applied() {
    let (ctx, _kafka, mut server) =
        setup(FakeKafka::with(Ok(vec![Some(16), Some(16), Some(16), Some(1), Some(16)])));
    reconcile(shard(1, json!({"spec": {"partitions": 32}})), ctx, async move {
        server.get_missing(STS).await;
        assert_eq!(server.event().await, "PartitionMismatch");
        let patch = server.apply_status().await;
        assert_eq!(condition(&patch["status"], "Degraded")["reason"], "PartitionMismatch");
        assert!(
            condition(&patch["status"], "Degraded")["message"].as_str().unwrap().contains("32")
        );
        server.silent().await;
    })
    .await;
}

#[tokio::test]
async fn a_shard_being_deleted_is_left_to_garbage_collection() {
    let (ctx, kafka, server) = setup(FakeKafka::default());
    let s = shard(1, json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}));
    let action = reconcile(s, ctx, async move { server.silent().await }).await;
    assert_eq!(action, Action::await_change());
    assert_eq!(*kafka.calls.lock().unwrap(), 0);
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

#[tokio::test(start_paused = true)]
async fn the_observed_p99_is_read_from_the_ready_pods_over_the_time_between_scrapes() {
    let pages = Pages::default();
    pages.pages.lock().unwrap().extend([
        ("10.0.0.7".to_owned(), vec![latency_page(500, 500, 500), latency_page(1480, 1500, 1500)]),
        ("10.0.0.8".to_owned(), vec![latency_page(0, 0, 0), latency_page(0, 0, 0)]),
    ]);
    let (ctx, _kafka, mut server, pages) = setup_with_pages(FakeKafka::default(), pages);
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "zone"}, "spec": {"replicas": 2, "selector": {}, "serviceName": "zone", "template": {}}, "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2}});
    // The shard's pods, found by their labels; the one not ready is not scraped.
    let pod = |name: &str, ip: &str, ready: &str| json!({"metadata": {"name": name}, "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}});
    let pods = json!([
        pod("zone-0", "10.0.0.7", "True"),
        pod("zone-1", "10.0.0.8", "True"),
        pod("zone-2", "10.0.0.9", "False"),
    ]);
    // Two reconciliations of a paused shard, a minute apart: each reads the StatefulSet,
    // lists the shard's pods and writes the status.
    let script = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..2 {
            server.get(STS, sts.clone()).await;
            server.pods(pods.clone()).await;
            statuses.push(server.apply_status().await["status"].clone());
        }
        server.silent().await;
        statuses
    });
    let paused = || Arc::new(shard(1, json!({"spec": {"paused": true}})));
    controller::reconcile(paused(), Arc::clone(&ctx)).await.expect("first reconcile");
    tokio::time::advance(Duration::from_secs(60)).await;
    controller::reconcile(paused(), ctx).await.expect("second reconcile");
    let statuses = script.await.expect("script passed");
    assert_eq!(statuses[0]["observedP99"], Value::Null, "one scrape is no window");
    // 1,000 new updates on zone-0, 980 within 1 ms: the 990th is halfway into 1-2 ms.
    assert_eq!(statuses[1]["observedP99"], "1.5ms", "{}", statuses[1]);
    assert_eq!(statuses[1]["observedP99Ms"], 1.5);
    assert_eq!(*pages.asked.lock().unwrap(), ["10.0.0.7", "10.0.0.8", "10.0.0.7", "10.0.0.8"]);
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
    let error = controller::reconcile(Arc::new(shard), ctx).await.expect_err("reconcile fails");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("every expected request came")
        .expect("script passed");
    error
}

/// Every topic exists and the assignment is the one in the status, so a reconcile goes
/// straight to the apply.
fn settled_shard() -> GameShard {
    let mut s = shard(1, json!({}));
    s.status = Some(GameShardStatus {
        assignment_epoch: Some(1),
        assignment: vec![
            PodAssignment { pod: "zone-0".into(), partitions: (0..8).collect() },
            PodAssignment { pod: "zone-1".into(), partitions: (8..16).collect() },
        ],
        observed_generation: Some(1),
        ..GameShardStatus::default()
    });
    s
}

fn all_topics() -> FakeKafka {
    FakeKafka::with(Ok(vec![Some(16), Some(16), Some(16), Some(1), Some(16)]))
}

#[tokio::test]
async fn a_conflicting_apply_fails_the_reconcile_and_counts_a_conflict_for_the_shard() {
    let (ctx, _kafka, mut server) = setup(all_topics());
    let error = reconcile_failing(settled_shard(), Arc::clone(&ctx), async move {
        server.fail(Method::PATCH, STS, 409, "Conflict").await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "Conflict");
    assert_eq!(failures(&ctx, "Conflict"), 1, "{}", ctx.metrics.render());
    assert_eq!(
        controller::error_policy(Arc::new(settled_shard()), &error, ctx),
        Action::requeue(Duration::from_secs(15)),
        "retried soon"
    );
}

#[tokio::test]
async fn a_server_error_on_the_status_counts_an_api_error_after_the_children_are_applied() {
    let (ctx, _kafka, mut server) = setup(all_topics());
    let error = reconcile_failing(settled_shard(), Arc::clone(&ctx), async move {
        server.apply(STS, None).await;
        server.apply(SVC, None).await;
        server.apply(SVC_METRICS, None).await;
        server.apply(PDB, None).await;
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
    let (ctx, _kafka, mut server) = setup(all_topics());
    let error = reconcile_failing(settled_shard(), Arc::clone(&ctx), async move {
        server.apply(STS, None).await;
        server.time_out(Method::PATCH, SVC).await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "ApiUnreachable");
    assert_eq!(failures(&ctx, "ApiUnreachable"), 1);
}

#[tokio::test]
async fn a_forbidden_secret_counts_forbidden_and_says_which_secret_in_the_error() {
    let (ctx, kafka, mut server) = setup(all_topics());
    let mut s = settled_shard();
    s.spec.kafka.credentials_secret = Some(gameshard_crds::SecretRef { name: "creds".into() });
    let error = reconcile_failing(s, Arc::clone(&ctx), async move {
        server.fail(Method::GET, "/api/v1/namespaces/game/secrets/creds", 403, "Forbidden").await;
        server.silent().await;
    })
    .await;
    assert_eq!(error.metric_label(), "Forbidden");
    assert_eq!(failures(&ctx, "Forbidden"), 1);
    assert_eq!(*kafka.calls.lock().unwrap(), 0, "Kafka is not asked without its credentials");
}
