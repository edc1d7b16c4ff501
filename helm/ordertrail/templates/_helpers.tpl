{{/* The chart's name, or nameOverride. */}}
{{- define "ordertrail.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's objects are named after the release, and the chart unless the release name has it already. */}}
{{- define "ordertrail.fullname" -}}
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

{{- define "ordertrail.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ordertrail.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ordertrail.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ordertrail.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ordertrail
{{- end }}

{{- define "ordertrail.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ordertrail.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ordertrail.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The configuration file the ConfigMap holds: the user's whole file, or `config` rendered. */}}
{{- define "ordertrail.configFile" -}}
{{- if .Values.configFile }}
{{- .Values.configFile }}
{{- else }}
{{- $config := deepCopy .Values.config }}
{{- if .Values.postgres.existingSecret }}
{{- $storage := default dict $config.storage }}
{{- $postgres := dict "url_env" "ORDERTRAIL_POSTGRES_URL" "pool_size" .Values.postgres.poolSize }}
{{- with .Values.postgres.tls }}
{{- if .existingSecret }}
{{- $tls := dict "ca_file" "/etc/ordertrail/secrets/postgres-tls/ca.crt" }}
{{- if .clientCertificate }}
{{- $_ := set $tls "cert_file" "/etc/ordertrail/secrets/postgres-tls/tls.crt" }}
{{- $_ := set $tls "key_file" "/etc/ordertrail/secrets/postgres-tls/tls.key" }}
{{- end }}
{{- if .serverName }}
{{- $_ := set $tls "server_name_override" .serverName }}
{{- end }}
{{- $_ := set $postgres "tls" $tls }}
{{- end }}
{{- end }}
{{- $_ := set $storage "postgres" $postgres }}
{{- $_ := set $config "storage" $storage }}
{{- end }}
{{- toYaml $config }}
{{- end }}
{{- end }}

{{/* Settings sized together, checked before anything is rendered. */}}
{{- define "ordertrail.checks" -}}
{{- if gt (int .Values.memory.requestMiB) (int .Values.memory.limitMiB) }}
{{- fail (printf "memory.requestMiB (%d) is above memory.limitMiB (%d)" (int .Values.memory.requestMiB) (int .Values.memory.limitMiB)) }}
{{- end }}
{{- $correlation := default dict .Values.config.correlation }}
{{- if and (not .Values.configFile) $correlation.max_orders }}
{{- /* About 4 KB an order in memory (BENCHMARKS.md), and 256 MiB for the rest, under the limiter's 80 %. */}}
{{- $needMiB := add 256 (div (mul (int64 $correlation.max_orders) 4) 1024) }}
{{- $haveMiB := div (mul (int .Values.memory.limitMiB) 4) 5 }}
{{- if gt (int64 $needMiB) (int64 $haveMiB) }}
{{- fail (printf "config.correlation.max_orders (%d) needs about %d MiB at about 4 KB an order, more than the %d MiB the memory limiter allows under memory.limitMiB (%d); lower max_orders (the rest stay on the volume) or raise memory.limitMiB" (int64 $correlation.max_orders) (int64 $needMiB) (int64 $haveMiB) (int .Values.memory.limitMiB)) }}
{{- end }}
{{- end }}
{{- $pipeline := default dict .Values.config.pipeline }}
{{- if and (not .Values.configFile) $pipeline.memory_limit_mib }}
{{- if ge (int $pipeline.memory_limit_mib) (int .Values.memory.limitMiB) }}
{{- fail (printf "config.pipeline.memory_limit_mib (%d) must be below memory.limitMiB (%d), or the container is killed before ordertrail refuses spans" (int $pipeline.memory_limit_mib) (int .Values.memory.limitMiB)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* HTTPS for the probes and the scrape when the HTTP API has TLS (`probeScheme` decides for a configFile). */}}
{{- define "ordertrail.apiScheme" -}}
{{- if .Values.probeScheme }}
{{- .Values.probeScheme }}
{{- else }}
{{- $api := default dict .Values.config.api }}
{{- $http := default dict $api.http }}
{{- if and (not .Values.configFile) $http.tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}
{{- end }}
