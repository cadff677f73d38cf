{{/*
The helpers PKO's chart defines, under the same names, so names and labels of an existing PKO
release stay what they were.
*/}}
{{- define "pulumi-kubernetes-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pulumi-kubernetes-operator.fullname" -}}
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

{{- define "pulumi-kubernetes-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pulumi-kubernetes-operator.labels" -}}
helm.sh/chart: {{ include "pulumi-kubernetes-operator.chart" . }}
{{ include "pulumi-kubernetes-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Deployment's selector: immutable, so exactly PKO's. */}}
{{- define "pulumi-kubernetes-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pulumi-kubernetes-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pulumi-kubernetes-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pulumi-kubernetes-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "pulumi-kubernetes-operator.advertisedAddress" -}}
{{- if .Values.controller.advertisedAddress }}
{{- .Values.controller.advertisedAddress }}
{{- else }}
{{- include "pulumi-kubernetes-operator.fullname" . }}.$(POD_NAMESPACE)
{{- end }}
{{- end }}

{{- define "pulumi-kubernetes-operator.imageName" -}}
{{- .Values.image.registry }}/{{- .Values.image.repository }}:{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/*
The operator's grants on namespaced objects: exactly the calls listed in operator/src/rbac.rs
(a test keeps this chart, config/rbac and that list equal). A ClusterRole grants them
everywhere; with `rbac.createRole`, Roles grant them in the watched namespaces.
*/}}
{{- define "pulumi-kubernetes-operator.namespacedRules" -}}
- apiGroups: ["pulumi.com"]
  resources: ["stacks"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["pulumi.com"]
  resources: ["stacks/status", "programs/status"]
  verbs: ["patch"]
- apiGroups: ["pulumi.com"]
  resources: ["stacks/finalizers"]
  verbs: ["update"]
- apiGroups: ["pulumi.com"]
  resources: ["programs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["auto.pulumi.com"]
  resources: ["workspaces", "updates"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["auto.pulumi.com"]
  resources: ["workspaces/status", "updates/status"]
  verbs: ["patch"]
- apiGroups: ["auto.pulumi.com"]
  resources: ["workspaces/finalizers"]
  verbs: ["update"]
- apiGroups: ["auto.pulumi.com"]
  resources: ["workspaces/rpc"]
  verbs: ["use"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["source.toolkit.fluxcd.io"]
  resources: ["gitrepositories", "ocirepositories", "buckets", "externalartifacts", "helmcharts"]
  verbs: ["get", "list", "watch"]
{{- with .Values.rbac.extraRules }}
{{ toYaml . }}
{{- end }}
{{- end }}
