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
