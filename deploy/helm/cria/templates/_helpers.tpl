{{- define "cria.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cria.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "cria.labels" -}}
app.kubernetes.io/name: {{ include "cria.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "cria.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cria.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Memory for one pod, in bytes: the mapped model, every slot's KV cache, and overhead. */}}
{{- define "cria.memoryBytes" -}}
{{- $kv := mul .Values.server.parallel .Values.server.ctxSize .Values.model.kvBytesPerToken -}}
{{- add .Values.model.sizeBytes $kv .Values.resources.overheadBytes -}}
{{- end -}}

{{/* The same in MiB, rounded up. */}}
{{- define "cria.memoryMi" -}}
{{- $b := include "cria.memoryBytes" . | int64 -}}
{{- printf "%dMi" (div (add $b 1048575) 1048576) -}}
{{- end -}}
