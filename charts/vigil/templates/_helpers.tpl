{{/* Names, labels and the checks every template shares. */}}

{{- define "vigil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vigil.fullname" -}}
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

{{- define "vigil.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vigil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vigil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vigil.labels" -}}
helm.sh/chart: {{ include "vigil.chart" . }}
{{ include "vigil.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vigil
{{- end }}

{{- define "vigil.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vigil.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image, by digest when one is given. */}}
{{- define "vigil.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "vigil.webhookServiceName" -}}
{{- include "vigil.fullname" . }}
{{- end }}

{{- define "vigil.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "vigil.fullname" .) }}
{{- end }}

{{/*
The namespaces the operator watches, as a list (empty: all). Fails on the combinations the
binary cannot serve, with a message saying what to do instead.
*/}}
{{- define "vigil.watchNamespaces" -}}
{{- $scope := .Values.rbac.scope }}
{{- $ns := .Values.watchNamespaces | default list }}
{{- if eq $scope "namespaced" }}
{{- if eq (len $ns) 0 }}
{{- fail "rbac.scope=namespaced needs watchNamespaces: [<namespace>]" }}
{{- end }}
{{- if gt (len $ns) 1 }}
{{- fail (printf "rbac.scope=namespaced with %d watchNamespaces (%s): vigil-operator watches one namespace or all of them. Install one release per namespace (each with watchNamespaces: [<one>]) until multi-namespace watching lands, or use rbac.scope=cluster." (len $ns) (join ", " $ns)) }}
{{- end }}
{{- else if gt (len $ns) 0 }}
{{- fail "watchNamespaces is for rbac.scope=namespaced; rbac.scope=cluster watches every namespace" }}
{{- end }}
{{- toJson $ns }}
{{- end }}

{{/* Namespaces that get the step ServiceAccount. */}}
{{- define "vigil.stepNamespaces" -}}
{{- $watched := include "vigil.watchNamespaces" . | fromJsonArray }}
{{- $base := ternary $watched (list .Release.Namespace) (gt (len $watched) 0) }}
{{- concat $base (.Values.stepServiceAccount.namespaces | default list) | uniq | toJson }}
{{- end }}
