{{/* Names and labels. */}}
{{- define "citywatch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "citywatch.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "ingest"). */}}
{{- define "citywatch.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "citywatch.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "citywatch.fullname" .)) -}}
{{- end -}}

{{- define "citywatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* What every CityWatch container gets: the ConfigMap, the database URL and the
     operator token from the Secret. */}}
{{- define "citywatch.commonEnv" -}}
- name: CITYWATCH_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ include "citywatch.secretName" . }}, key: database-url}
- name: CITYWATCH_OPERATOR_TOKEN
  valueFrom:
    secretKeyRef: {name: {{ include "citywatch.secretName" . }}, key: operator-token}
{{- end -}}

{{/* The pod spec's shared parts: (dict "root" $ "component" NAME). */}}
{{- define "citywatch.podCommon" -}}
{{- $v := index .root.Values .component -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets: {{ toYaml . | nindent 2 }}
{{- end }}
securityContext: {{ toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ .root.Values.terminationGracePeriodSeconds }}
{{- with $v.nodeSelector }}
nodeSelector: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations: {{ toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity: {{ toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The settings every container gets: `config`, and how Kafka logins travel when they are
     on. One mapping for the ConfigMap and for the migration Job (a hook, which cannot read
     the ConfigMap), so the two cannot differ. */}}
{{- define "citywatch.config" -}}
{{- $auth := .Values.kafka.auth -}}
{{- $kafka := dict -}}
{{- if $auth.enabled -}}
{{- if not (has $auth.securityProtocol (list "SASL_SSL" "SASL_PLAINTEXT")) -}}
{{- fail "kafka.auth.securityProtocol must be SASL_SSL or SASL_PLAINTEXT" -}}
{{- end -}}
{{- $_ := set $kafka "KAFKA_SECURITY_PROTOCOL" $auth.securityProtocol -}}
{{- if $auth.caSecret -}}
{{- if ne $auth.securityProtocol "SASL_SSL" -}}
{{- fail "kafka.auth.caSecret is for TLS: set kafka.auth.securityProtocol=SASL_SSL" -}}
{{- end -}}
{{- $_ := set $kafka "KAFKA_CA_FILE" "/etc/citywatch/kafka-ca/ca.crt" -}}
{{- end -}}
{{- end -}}
{{- toYaml (merge $kafka .Values.config) -}}
{{- end -}}

{{/* One principal's Kafka login, the password from its Secret (never the ConfigMap):
     (dict "root" $ "account" "citywatch-ingest"). Nothing when logins are off. */}}
{{- define "citywatch.kafkaLogin" -}}
{{- $auth := .root.Values.kafka.auth -}}
{{- if $auth.enabled -}}
- {name: CITYWATCH_KAFKA_USERNAME, value: {{ .account }}}
- name: CITYWATCH_KAFKA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ index $auth.secrets .account | required (printf "kafka.auth.secrets.%s (its Secret's name) is required" .account) }}
      key: {{ $auth.passwordKey }}
{{- end }}
{{- end -}}

{{/* The brokers' CA, where CITYWATCH_KAFKA_CA_FILE points: a volume and its mount. */}}
{{- define "citywatch.kafkaCaVolume" -}}
{{- if and .Values.kafka.auth.enabled .Values.kafka.auth.caSecret -}}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.auth.caSecret }}
    items: [{key: {{ .Values.kafka.auth.caKey | quote }}, path: ca.crt}]
{{- end }}
{{- end -}}

{{- define "citywatch.kafkaCaMount" -}}
{{- if and .Values.kafka.auth.enabled .Values.kafka.auth.caSecret -}}
- {name: kafka-ca, mountPath: /etc/citywatch/kafka-ca, readOnly: true}
{{- end }}
{{- end -}}
