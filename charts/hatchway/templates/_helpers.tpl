{{/*
The chart name (app.kubernetes.io/name).
*/}}
{{- define "hatchway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of every object. At most 54 characters, so that
"<fullname>-replicas" (a Service: a DNS label) stays within 63.
*/}}
{{- define "hatchway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
helm.sh/chart: name-version.
*/}}
{{- define "hatchway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator pods. The component keeps the uninstall
hook's pod out of the Deployment's and the Services' selection.
*/}}
{{- define "hatchway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hatchway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Standard labels. Call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "hatchway.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "hatchway.chart" $ctx }}
app.kubernetes.io/name: {{ include "hatchway.name" $ctx }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/version: {{ $ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: hatchway
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "hatchway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hatchway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image references; an empty tag means the chart's appVersion.
*/}}
{{- define "hatchway.image" -}}
{{- include "hatchway.imageName" (list .Values.image .) }}
{{- end }}

{{- define "hatchway.sidecarImage" -}}
{{- include "hatchway.imageName" (list .Values.sidecar.image .) }}
{{- end }}

{{/*
registry/repository:tag of an image's values (list IMAGE ROOT): the
registry is global.imageRegistry when set, else the image's own; none: the
repository alone. The tag defaults to the chart's appVersion.
*/}}
{{- define "hatchway.imageName" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- $registry := default $image.registry (($root.Values.global).imageRegistry) }}
{{- $tag := default $root.Chart.AppVersion $image.tag }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry $image.repository $tag }}
{{- else }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The router's in-cluster URL (the Service), for sidecars' tunnels and the
default public URL.
*/}}
{{- define "hatchway.internalUrl" -}}
{{- printf "https://%s.%s.svc:%d" (include "hatchway.fullname" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{- define "hatchway.publicUrl" -}}
{{- default (include "hatchway.internalUrl" .) .Values.publicUrl }}
{{- end }}

{{/*
A host without its port (and IPv6 brackets): "a.example.com:30443" ->
"a.example.com", "[::1]:443" -> "::1".
*/}}
{{- define "hatchway.hostOnly" -}}
{{- regexReplaceAll ":[0-9]+$" . "" | trimPrefix "[" | trimSuffix "]" }}
{{- end }}

{{/*
The web apps' wildcard domain without its port ("" when unset).
*/}}
{{- define "hatchway.wildcardHost" -}}
{{- with .Values.webApps.wildcardDomain }}{{ include "hatchway.hostOnly" . }}{{ end }}
{{- end }}

{{/*
Names in the generated serving certificate (HATCHWAY_TLS_NAMES), comma
separated: the Service's DNS names, the Ingress host, the web apps'
wildcard, the public URL's host and tls.extraNames.
*/}}
{{- define "hatchway.tlsNames" -}}
{{- $fullname := include "hatchway.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $names := list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns) }}
{{- if .Values.aggregatedApi.enabled }}
{{- $names = append $names (printf "%s-api.%s.svc" $fullname $ns) }}
{{- end }}
{{- if .Values.ingress.host }}
{{- $names = append $names .Values.ingress.host }}
{{- end }}
{{- with include "hatchway.wildcardHost" . }}
{{- $names = append $names (printf "*.%s" .) }}
{{- end }}
{{- if .Values.publicUrl }}
{{- $names = append $names (include "hatchway.hostOnly" (urlParse .Values.publicUrl).host) }}
{{- end }}
{{- $names = concat $names .Values.tls.extraNames }}
{{- $names | uniq | join "," }}
{{- end }}

{{/*
The Secret holding the router's serving certificate: tls.secretName, or
<fullname>-tls when cert-manager makes it; empty: the operator's own CA.
*/}}
{{- define "hatchway.tlsSecretName" -}}
{{- if .Values.tls.secretName }}{{ .Values.tls.secretName }}
{{- else if .Values.certManager.enabled }}{{ printf "%s-tls" (include "hatchway.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The operator pods' security context (also the uninstall hook's).
*/}}
{{- define "hatchway.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "hatchway.containerSecurityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end }}

{{/*
Scheduling settings shared by the Deployment and the uninstall hook.
*/}}
{{- define "hatchway.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/*
A label map as comma-separated k=v pairs (for HATCHWAY_* variables).
*/}}
{{- define "hatchway.labelPairs" -}}
{{- $pairs := list -}}
{{- range $k, $v := . }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end -}}
{{- join "," $pairs -}}
{{- end }}
