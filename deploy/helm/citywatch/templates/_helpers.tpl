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
