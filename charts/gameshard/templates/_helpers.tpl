{{/*
Named templates shared by the chart's manifests.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "gameshard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every resource name: fullnameOverride, or "<release>-<chart name>", or just
the release name when it already contains the chart name. At most 63 characters.
*/}}
{{- define "gameshard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<chart>-<version>", for the helm.sh/chart label. */}}
{{- define "gameshard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of a resource. Takes a dict: ctx (the root context) and component (the
app.kubernetes.io/component value: operator or monitoring).
*/}}
{{- define "gameshard.labels" -}}
helm.sh/chart: {{ include "gameshard.chart" .ctx }}
{{ include "gameshard.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{/* Labels that select a component's pods and services (same dict as gameshard.labels). */}}
{{- define "gameshard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gameshard.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "gameshard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gameshard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference. */}}
{{- define "gameshard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The data plane image reference the operator puts in every data plane pod. */}}
{{- define "gameshard.dataplaneImage" -}}
{{- printf "%s:%s" .Values.dataplaneImage.repository (.Values.dataplaneImage.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The operator's permissions on the namespaces it manages, for a ClusterRole (every
namespace) or a Role (each of watchNamespaces). Secrets: `get` by name only, on the
Secrets listed in kafkaSecrets; nothing at all when the list is empty.
*/}}
{{- define "gameshard.operatorRules" -}}
- apiGroups: ["gameshard.io"]
  resources: ["gameshards"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["gameshard.io"]
  resources: ["gameshards/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- with .Values.kafkaSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames:
    {{- toYaml . | nindent 4 }}
  verbs: ["get"]
{{- end }}
{{- end }}
