{{/*
Shared names and labels. Resource names are "<fullname>-<component>"; the selector labels
(name, instance, component) never change across upgrades because selectors are immutable.
*/}}

{{- define "labelwall.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "labelwall.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", kept within the 63-character name limit. */}}
{{- define "labelwall.componentName" -}}
{{- printf "%s-%s" (include "labelwall.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "labelwall.selectorLabels" -}}
app.kubernetes.io/name: {{ include "labelwall.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "labelwall.labels" -}}
{{ include "labelwall.selectorLabels" . }}
app.kubernetes.io/part-of: labelwall
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "labelwall.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Where the config file is mounted; both commands take it with --config. */}}
{{- define "labelwall.configDir" -}}/etc/labelwall{{- end -}}
{{- define "labelwall.configPath" -}}/etc/labelwall/config.yaml{{- end -}}

{{/* The kopf peering object the operator replicas share (a fixed name: one per cluster). */}}
{{- define "labelwall.peeringName" -}}labelwall{{- end -}}
