{{/*
Names, labels and the rendered broker configuration, shared by the templates.
*/}}

{{/* The chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "brook.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources. Truncated to 52 characters, not 63:
the headless Service adds "-headless" and a StatefulSet's pods add their
ordinal, and both must stay valid DNS labels.
*/}}
{{- define "brook.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "brook.headlessName" -}}
{{- printf "%s-headless" (include "brook.fullname" .) }}
{{- end }}

{{- define "brook.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the broker pods. Never change them: selectors are immutable. */}}
{{- define "brook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "brook.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "brook.labels" -}}
helm.sh/chart: {{ include "brook.chart" . }}
{{ include "brook.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: brook
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The annotations of a resource's metadata: commonAnnotations merged with
"extra" (which wins), or nothing. Call with (dict "ctx" $ "extra" $map) right
after the labels; it writes its own leading newline and indentation.
*/}}
{{- define "brook.annotations" -}}
{{- $all := merge (deepCopy (default dict .extra)) (default dict .ctx.Values.commonAnnotations) }}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "brook.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "brook.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "brook.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Listen addresses inside the pod: every interface, the chart's ports. */}}
{{- define "brook.listen" -}}
{{- printf "0.0.0.0:%d" (int .Values.ports.grpc) }}
{{- end }}
{{- define "brook.httpListen" -}}
{{- printf "0.0.0.0:%d" (int .Values.ports.http) }}
{{- end }}

{{/*
One TOML value. Helm reads YAML numbers as float64, which would print as
2.68435456e+08, so numbers are printed as integers (every numeric broker
setting is one); strings are quoted (JSON string escapes are valid TOML).
*/}}
{{- define "brook.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}{{ int64 . }}
{{- else if kindIs "slice" . }}[{{ range $i, $item := . }}{{ if $i }}, {{ end }}{{ if or (kindIs "int" $item) (kindIs "int64" $item) (kindIs "float64" $item) }}{{ int64 $item }}{{ else }}{{ toJson (toString $item) }}{{ end }}{{ end }}]
{{- else }}{{ fail (printf "brook.toml: unsupported value %v (%s): the file is flat, use strings, numbers, booleans and lists of strings or numbers" . (kindOf .)) }}
{{- end }}
{{- end }}

{{/*
The broker settings the chart renders: .Values.config with .Values.extraConfig
merged over it (extraConfig wins), as a dict; null values are left out, so the
broker's own default applies to them. Keys the chart owns are refused.
*/}}
{{- define "brook.settings" -}}
{{- $merged := dict }}
{{- range $key, $value := .Values.config }}
{{- if not (kindIs "invalid" $value) }}{{ $_ := set $merged $key $value }}{{ end }}
{{- end }}
{{- range $key, $value := .Values.extraConfig }}
{{- if not (kindIs "invalid" $value) }}{{ $_ := set $merged $key $value }}{{ end }}
{{- end }}
{{- range $key := list "data_dir" "listen" "http_listen" }}
{{- if hasKey $merged $key }}
{{- fail (printf "brook.toml: %q is set by the chart and cannot be configured" $key) }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- range $key := list "tls_cert" "tls_key" "tls_client_ca" }}
{{- if hasKey $merged $key }}
{{- fail (printf "brook.toml: %q is set by the chart from tls.secretName when tls.enabled" $key) }}
{{- end }}
{{- end }}
{{- $_ := set $merged "tls_cert" (printf "%s/tls.crt" (include "brook.tlsDir" .)) }}
{{- $_ := set $merged "tls_key" (printf "%s/tls.key" (include "brook.tlsDir" .)) }}
{{- if ne (toString (default "none" (index $merged "tls_client_auth"))) "none" }}
{{- $_ := set $merged "tls_client_ca" (printf "%s/ca.crt" (include "brook.tlsDir" .)) }}
{{- end }}
{{- end }}
{{- include "brook.authSettings" (dict "ctx" . "merged" $merged) }}
{{- include "brook.clusterSettings" (dict "ctx" . "merged" $merged) }}
{{- toJson $merged }}
{{- end }}

{{/*
The authentication keys of brook.toml, from .Values.auth, set into "merged"
(the settings so far). They are the chart's: given in config or extraConfig
they are refused. Settings the broker would refuse at start fail here.
*/}}
{{- define "brook.authSettings" -}}
{{- $merged := .merged }}
{{- $auth := .ctx.Values.auth }}
{{- range $key := list "auth" "token_file" "jwks_file" "jwt_issuer" "jwt_audience" }}
{{- if hasKey $merged $key }}
{{- fail (printf "brook.toml: %q is set by the chart from auth.*" $key) }}
{{- end }}
{{- end }}
{{- $_ := set $merged "auth" $auth.mode }}
{{- if eq $auth.mode "mtls" }}
{{- if or (not .ctx.Values.tls.enabled) (ne (toString (index $merged "tls_client_auth")) "required") }}
{{- fail "auth.mode mtls needs tls.enabled and config.tls_client_auth: required" }}
{{- end }}
{{- else if (ne (toString (default "common-name" (index $merged "mtls_principal"))) "common-name") }}
{{- fail "config.mtls_principal is only used with auth.mode mtls" }}
{{- end }}
{{- if eq $auth.mode "token" }}
{{- if not (or $auth.tokenSecret $auth.jwt.jwksConfigMap) }}
{{- fail "auth.mode token needs auth.tokenSecret, auth.jwt.jwksConfigMap or both" }}
{{- end }}
{{- if $auth.tokenSecret }}
{{- $_ := set $merged "token_file" (printf "%s/%s" (include "brook.tokensDir" .ctx) $auth.tokenSecretKey) }}
{{- end }}
{{- if $auth.jwt.jwksConfigMap }}
{{- $_ := set $merged "jwks_file" (printf "%s/%s" (include "brook.jwksDir" .ctx) $auth.jwt.jwksKey) }}
{{- $_ := set $merged "jwt_issuer" (required "auth.jwt.issuer is required with auth.jwt.jwksConfigMap" $auth.jwt.issuer) }}
{{- $_ := set $merged "jwt_audience" (required "auth.jwt.audience is required with auth.jwt.jwksConfigMap" $auth.jwt.audience) }}
{{- end }}
{{- else if or $auth.tokenSecret $auth.jwt.jwksConfigMap }}
{{- fail "auth.tokenSecret and auth.jwt.jwksConfigMap need auth.mode token" }}
{{- else if $auth.peerTokenSecret }}
{{- fail "auth.peerTokenSecret needs auth.mode token" }}
{{- end }}
{{- end }}

{{/*
The cluster keys of brook.toml, set into "merged" (the settings so far, auth
included). With replicaCount above 1 every pod gets the same peers, each
pod's stable name, and takes its node id from its own name (brook-0 is
broker 1); brokers 1 to .Values.founders form the cluster, and the pods
beyond them (replicaCount raised later) ask to be added on their first
start. With 1 there are none. They are the chart's: given in extraConfig
they are refused, and so is join.

Brokers call each other on the gRPC port and speak what it speaks. With TLS
they verify each other's certificates against peer_ca, the TLS Secret's
tls.peerCaKey (ca.crt). With authentication the brokers' own service is
served to super users only, so each broker's principal must be in
super_users: with auth.mode token each presents the token of
auth.peerTokenSecret (peer_token_file), with mtls its certificate. What the
broker would refuse at start (no super_users, no peer token) fails here
rather than in pods that cannot start.
*/}}
{{- define "brook.clusterSettings" -}}
{{- $merged := .merged }}
{{- $ctx := .ctx }}
{{- $replicas := int $ctx.Values.replicaCount }}
{{- range $key := list "node_id" "node_id_from_hostname" "peers" "founders" }}
{{- if hasKey $merged $key }}
{{- fail (printf "brook.toml: %q is set by the chart from replicaCount" $key) }}
{{- end }}
{{- end }}
{{- if hasKey $merged "join" }}
{{- fail "brook.toml: \"join\" is not the chart's: every pod forms the cluster with the others, and brokers that join a running one are added outside the chart (see docs/cluster.md)" }}
{{- end }}
{{- if hasKey $merged "peer_ca" }}
{{- fail "brook.toml: \"peer_ca\" is set by the chart from tls.peerCaKey" }}
{{- end }}
{{- if hasKey $merged "peer_token_file" }}
{{- fail "brook.toml: \"peer_token_file\" is set by the chart from auth.peerTokenSecret" }}
{{- end }}
{{- if gt $replicas 1 }}
{{- $founders := int $ctx.Values.founders }}
{{- if lt $replicas $founders }}
{{- fail (printf "replicaCount %d is below founders %d: the first founders brokers form the cluster, and it must keep the number it was installed with (set founders to replicaCount when installing a smaller cluster)" $replicas $founders) }}
{{- end }}
{{- $_ := set $merged "node_id_from_hostname" true }}
{{- $_ := set $merged "peers" (include "brook.peers" $ctx | fromJsonArray) }}
{{- $_ := set $merged "founders" (untilStep 1 (int (add1 $founders)) 1) }}
{{- if hasKey $merged "tls_cert" }}
{{- $_ := set $merged "peer_ca" (printf "%s/%s" (include "brook.tlsDir" $ctx) $ctx.Values.tls.peerCaKey) }}
{{- end }}
{{- $mode := toString (index $merged "auth") }}
{{- $auth := $ctx.Values.auth }}
{{- if eq $mode "token" }}
{{- if not $auth.peerTokenSecret }}
{{- fail (printf "replicaCount %d makes a cluster with auth.mode token, which needs auth.peerTokenSecret: a Secret holding the token each broker presents to its peers (key auth.peerTokenSecretKey, %q), whose name in the token file must be in config.super_users (see docs/cluster.md)" $replicas $auth.peerTokenSecretKey) }}
{{- end }}
{{- $_ := set $merged "peer_token_file" (printf "%s/%s" (include "brook.peerTokenDir" $ctx) $auth.peerTokenSecretKey) }}
{{- end }}
{{- if ne $mode "none" }}
{{- $superUsers := index $merged "super_users" }}
{{- if not $superUsers }}
{{- $principal := ternary "the name of auth.peerTokenSecret's token in the token file" "the principal of their certificate" (eq $mode "token") }}
{{- fail (printf "replicaCount %d makes a cluster with auth.mode %s, which needs config.super_users: the brokers' own service takes calls from super users only, so the brokers' principal (%s) must be a super user (see docs/cluster.md)" $replicas $mode $principal) }}
{{- end }}
{{- if and (eq $mode "mtls") $ctx.Values.tls.certManager.enabled }}
{{- $field := toString (default "common-name" (index $merged "mtls_principal")) }}
{{- $fullname := include "brook.fullname" $ctx }}
{{- if not (has $field (list "common-name" "dns-name")) }}
{{- fail (printf "replicaCount %d makes a cluster with auth.mode mtls, whose brokers authenticate with the certificate of tls.certManager; it names them only by DNS names (the first: %q), which config.mtls_principal %s does not read. Use common-name or dns-name, or a Secret of your own (tls.secretName) whose certificates carry the brokers' principal" $replicas $fullname $field) }}
{{- end }}
{{- if not (has $fullname $superUsers) }}
{{- fail (printf "replicaCount %d makes a cluster with auth.mode mtls: the brokers present the certificate of tls.certManager, whose principal is its first DNS name %q; add it to config.super_users (only super users may call the brokers' own service)" $replicas $fullname) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Every broker of the cluster as ID=HOST:PORT, a JSON list: pod <ordinal> is
broker <ordinal + 1>, at its name under the headless Service and the gRPC
port, the address its peers call and clients are sent to.
*/}}
{{- define "brook.peers" -}}
{{- $fullname := include "brook.fullname" . }}
{{- $domain := printf "%s.%s.svc.%s" (include "brook.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- $peers := list }}
{{- range $ordinal := until (int .Values.replicaCount) }}
{{- $peers = append $peers (printf "%d=%s-%d.%s:%d" (add1 $ordinal) $fullname $ordinal $domain (int $.Values.ports.grpc)) }}
{{- end }}
{{- toJson $peers }}
{{- end }}

{{/*
How many pods a PodDisruptionBudget count stands for: an integer, or a
percentage of the replicas rounded up, as Kubernetes counts it. Call with
(list $count $replicas).
*/}}
{{- define "brook.podCount" -}}
{{- $count := index . 0 }}
{{- $replicas := int (index . 1) }}
{{- if and (kindIs "string" $count) (hasSuffix "%" $count) }}
{{- div (add (mul (atoi (trimSuffix "%" $count)) $replicas) 99) 100 }}
{{- else }}
{{- int $count }}
{{- end }}
{{- end }}

{{/* Where the token file's Secret and the JWKS ConfigMap are mounted. */}}
{{- define "brook.tokensDir" -}}
/etc/brook-auth/tokens
{{- end }}
{{- define "brook.jwksDir" -}}
/etc/brook-auth/jwks
{{- end }}
{{/* Where the Secret of the token a broker presents to its peers is mounted. */}}
{{- define "brook.peerTokenDir" -}}
/etc/brook-auth/peer-token
{{- end }}

{{/* The scheme of the HTTP port: HTTPS with config.tls_http. */}}
{{- define "brook.httpScheme" -}}
{{- $settings := include "brook.settings" . | fromJson }}
{{- if and .Values.tls.enabled (index $settings "tls_http") }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* Where the TLS Secret is mounted. */}}
{{- define "brook.tlsDir" -}}
/etc/brook-tls
{{- end }}

{{/* The TLS Secret: tls.secretName, else the one the Certificate writes. */}}
{{- define "brook.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "brook.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/* brook.toml: the chart-owned keys, then the settings, sorted. */}}
{{- define "brook.config" -}}
{{- $settings := include "brook.settings" . | fromJson -}}
# Rendered by the Helm chart from .Values.config and .Values.extraConfig.
# BROOK_* environment variables and flags override these keys.
data_dir = "/data"
listen = {{ include "brook.listen" . | quote }}
http_listen = {{ include "brook.httpListen" . | quote }}
{{- range $key := keys $settings | sortAlpha }}
{{ $key }} = {{ include "brook.tomlValue" (index $settings $key) }}
{{- end }}
{{- end }}

{{/*
The value of one broker setting as the chart renders it, or the given default.
Call with (list $ "key" default).
*/}}
{{- define "brook.setting" -}}
{{- $settings := include "brook.settings" (index . 0) | fromJson }}
{{- $value := index . 2 }}
{{- if hasKey $settings (index . 1) }}{{ $value = index $settings (index . 1) }}{{ end }}
{{- if kindIs "string" $value }}{{ $value }}{{ else }}{{ int64 $value }}{{ end }}
{{- end }}

{{/*
terminationGracePeriodSeconds: the broker's shutdown_grace_ms (default 30000)
rounded up to whole seconds, plus the margin for the final fsyncs. Kubernetes
kills the container when it runs out, so it must outlast the broker's drain.
*/}}
{{- define "brook.terminationGracePeriodSeconds" -}}
{{- $graceMs := include "brook.setting" (list . "shutdown_grace_ms" 30000) | int64 }}
{{- add (div (add $graceMs 999) 1000) (int64 .Values.terminationGracePeriodMarginSeconds) }}
{{- end }}
