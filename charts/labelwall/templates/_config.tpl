{{/*
The config file's content (also hashed into the pods' checksum/config annotation so that a
values change restarts them). toJson renders each value as a YAML-compatible scalar or list.
*/}}
{{- define "labelwall.configFile" -}}
logLevel: {{ .Values.logLevel | toJson }}
identity:
  excludeLabels: {{ .Values.identity.excludeLabels | toJson }}
  gcGracePeriodSeconds: {{ .Values.identity.gcGracePeriodSeconds | int64 }}
audit: {{ .Values.audit | toJson }}
auditNamespaces: {{ .Values.auditNamespaces | toJson }}
serviceCIDRs: {{ .Values.serviceCIDRs | toJson }}
mapSizes:
  endpoints: {{ .Values.mapSizes.endpoints | int64 }}
  subjects: {{ .Values.mapSizes.subjects | int64 }}
  policy: {{ .Values.mapSizes.policy | int64 }}
  ipcache: {{ .Values.mapSizes.ipcache | int64 }}
  cidrs: {{ .Values.mapSizes.cidrs | int64 }}
  ports: {{ .Values.mapSizes.ports | int64 }}
  conntrack: {{ .Values.mapSizes.conntrack | int64 }}
  conntrackNew: {{ .Values.mapSizes.conntrackNew | int64 }}
conntrack:
  promotePerSecond: {{ .Values.conntrack.promotePerSecond | int64 }}
  promoteBurst: {{ .Values.conntrack.promoteBurst | int64 }}
operator:
  metricsPort: {{ .Values.operator.metricsPort | int64 }}
  healthPort: {{ .Values.operator.healthPort | int64 }}
agent:
  metricsPort: {{ .Values.agent.metricsPort | int64 }}
  healthPort: {{ .Values.agent.healthPort | int64 }}
  bpffs: {{ .Values.agent.bpffs | toJson }}
{{- end -}}
