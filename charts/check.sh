#!/usr/bin/env bash
# Lints and renders the Hatchway chart and checks the rendered objects.
#
#   bash charts/check.sh [HELM]
#
# HELM defaults to the e2e cluster's helm (`e2e/cluster helm`, built and
# cached without a cluster). No cluster is needed. Prints one line per
# check and ends with `chart checks: N passed`; exits non-zero at the first
# failure.
set -euo pipefail

script_dir=$(cd "$(dirname "$0")" && pwd)
if [[ $# -ge 1 && -n $1 ]]; then
  helm=$1
  # Keep a relative path working after the cd below.
  if [[ $helm == */* && $helm != /* ]]; then helm="$PWD/$helm"; fi
else
  helm=$("$script_dir/../e2e/cluster" helm 2>/dev/null) || {
    echo "cannot build helm with e2e/cluster helm; pass the helm binary as \$1" >&2
    exit 1
  }
fi
cd "$script_dir/.."

chart=charts/hatchway
# helm template defaults to Kubernetes v1.20, below the chart's kubeVersion.
kube_version=1.34.0
release=hw
namespace=hatchway-system
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
ok() {
  passed=$((passed + 1))
  echo "ok   $*"
}
fail() {
  echo "FAIL $*" >&2
  exit 1
}

render() { # FILE ARGS...: helm template into FILE
  local out=$1
  shift
  "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$kube_version" "$@" >"$out"
}

# doc FILE KIND NAME: print the rendered object KIND/NAME (fails if absent).
doc() {
  python3 - "$@" <<'PY'
import re, sys
path, kind, name = sys.argv[1:4]
text = open(path).read()
for d in re.split(r"(?m)^---\s*$", text):
    k = re.search(r"(?m)^kind:\s*(\S+)", d)
    n = re.search(r"(?m)^metadata:\n(?:  .*\n)*?  name:\s*(\S+)", d)
    if k and n and k.group(1) == kind and n.group(1).strip('"') == name:
        sys.stdout.write(d)
        sys.exit(0)
sys.exit(1)
PY
}

# has FILE KIND NAME: whether the object is rendered.
has() { doc "$@" >/dev/null; }

# contains TEXT REGEX...: every (extended) regex matches a line of TEXT.
contains() {
  local text=$1
  shift
  local re
  for re in "$@"; do
    grep -Eq -- "$re" <<<"$text" || return 1
  done
}

# ---------------------------------------------------------------------------
# 1. Lint.
# The chart's metadata (Artifact Hub): home, sources, maintainers, and
# annotations whose images carry the appVersion.
"$helm" show chart "$chart" >"$work/chart.yaml"
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$work/chart.yaml")
# `make release` packages the chart at the crates' version: Chart.yaml
# must say the same (its Artifact Hub images too).
[[ $app_version == "$(hack/version)" ]] || fail "Chart.yaml's appVersion $app_version is not the crates' version $(hack/version)"
for field in '^home: https://' '^icon: https://' '^sources:' '^maintainers:' 'artifacthub.io/crds:' 'artifacthub.io/changes:' 'artifacthub.io/license:'; do
  grep -q -- "$field" "$work/chart.yaml" || fail "Chart.yaml has no $field"
done
# The icon is a file of this repository, at its path on main.
icon=$(sed -n 's|^icon: https://raw.githubusercontent.com/hatchway-dev/hatchway/main/||p' "$work/chart.yaml")
[[ -n $icon && -f $icon ]] || fail "Chart.yaml's icon is not a file of the repository on main: ${icon:-none}"
# The chart's README is generated from values.yaml's `# --` comments.
/usr/bin/python3 charts/readme.py --check || fail "charts/hatchway/README.md"
ok "charts/hatchway/README.md documents every value, as values.yaml says"

for image in hatchway-operator hatchway-sidecar; do
  grep -q "image: ghcr.io/hatchway-dev/$image:$app_version\$" "$work/chart.yaml" ||
    fail "Chart.yaml's artifacthub.io/images does not name $image:$app_version"
done
ok "Chart.yaml: home, icon, sources, maintainers, Artifact Hub annotations (images at $app_version)"
"$helm" lint --strict "$chart" >"$work/lint.txt" 2>&1 || { cat "$work/lint.txt" >&2; fail "helm lint --strict"; }
ok "helm lint --strict (defaults)"
"$helm" lint --strict "$chart" --set service.type=NodePort --set service.nodePort=30443 >"$work/lint.txt" 2>&1 ||
  { cat "$work/lint.txt" >&2; fail "helm lint --strict (NodePort)"; }
ok "helm lint --strict (NodePort 30443)"

# ---------------------------------------------------------------------------
# 2. Render: defaults, and a maximal set.
render "$work/default.yaml" || fail "helm template (defaults)"
ok "helm template (defaults) renders"
max_args=(
  --set service.type=NodePort --set service.nodePort=30443
  --set ingress.enabled=true --set ingress.host=hatchway.example.com --set ingress.className=nginx
  --set webApps.wildcardDomain=apps.example.com:30443
  --set metrics.serviceMonitor.enabled=true
  --set tls.secretName=router-tls --set 'tls.extraNames={10.0.0.1}'
  --set 'watchNamespaces={a,b}'
  --set publicUrl=https://hatchway.example.com
)
render "$work/max.yaml" "${max_args[@]}" || fail "helm template (maximal values)"
ok "helm template (maximal values) renders"

fullname="$release-hatchway"
deploy=$(doc "$work/default.yaml" Deployment "$fullname") || fail "no Deployment $fullname"
maxdeploy=$(doc "$work/max.yaml" Deployment "$fullname") || fail "no Deployment $fullname (maximal)"

contains "$deploy" '^  replicas: 2$' || fail "Deployment replicas is not 2"
ok "Deployment has 2 replicas"

contains "$deploy" '^        runAsNonRoot: true$' '^        runAsUser: 65532$' '^        fsGroup: 65532$' \
  '^          type: RuntimeDefault$' ||
  fail "pod securityContext: runAsNonRoot/runAsUser/fsGroup/seccomp RuntimeDefault missing"
ok "pod securityContext: runAsNonRoot, uid 65532, seccomp RuntimeDefault"

contains "$deploy" '^            readOnlyRootFilesystem: true$' '^            allowPrivilegeEscalation: false$' \
  '^              drop:$' '^              - ALL$' ||
  fail "container securityContext: readOnlyRootFilesystem/allowPrivilegeEscalation/drop ALL missing"
ok "container securityContext: readOnlyRootFilesystem, no privilege escalation, drop ALL"

contains "$deploy" '^          args:$' '^            - run$' '^            - name: https$' '^              containerPort: 8443$' \
  'path: /healthz' 'path: /readyz' '^              scheme: HTTPS$' ||
  fail "operator container: args run, port https 8443, HTTPS probes"
ok "operator container runs \`run\` on port https/8443 with HTTPS probes"

# Every env value is a quoted string.
if grep -E '^ +value: ' <<<"$deploy" | grep -Ev '^ +value: "' >/dev/null; then
  grep -E '^ +value: ' <<<"$deploy" | grep -Ev '^ +value: "' >&2
  fail "unquoted env values in the Deployment"
fi
ok "Deployment env values are all quoted strings"

env_value() { # TEXT NAME: the value of env NAME
  python3 -c '
import re, sys
m = re.search(r"- name: " + re.escape(sys.argv[2]) + r"\n +value: (.*)\n", sys.argv[1])
print(m.group(1) if m else "<unset>")' "$1" "$2"
}
svc_url="\"https://$fullname.$namespace.svc:443\""
[[ $(env_value "$deploy" HATCHWAY_TUNNEL_URL) == "$svc_url" ]] || fail "HATCHWAY_TUNNEL_URL is not $svc_url"
[[ $(env_value "$deploy" HATCHWAY_PUBLIC_URL) == "$svc_url" ]] || fail "default HATCHWAY_PUBLIC_URL is not $svc_url"
[[ $(env_value "$deploy" HATCHWAY_TLS_DIR) == "<unset>" ]] || fail "HATCHWAY_TLS_DIR set without tls.secretName"
version=$(awk '/^appVersion:/ { gsub(/"/, "", $2); print $2 }' "$chart/Chart.yaml")
[[ $(env_value "$deploy" HATCHWAY_SIDECAR_IMAGE) == "\"ghcr.io/hatchway-dev/hatchway-sidecar:$version\"" ]] ||
  fail "the sidecar image does not default to the published one, tagged appVersion"
contains "$deploy" "^          image: \"ghcr.io/hatchway-dev/hatchway-operator:$version\"$" ||
  fail "the operator image does not default to the published one, tagged appVersion"
ok "defaults: tunnel and public URL are the Service, no TLS dir, images ghcr.io/hatchway-dev/*:$version"

# A registry for both images (where `make push` put them), and none at all.
render "$work/registry.yaml" --set global.imageRegistry=10.0.0.5:5000/mirror || fail "helm template (global.imageRegistry)"
grep -q '^          image: "10.0.0.5:5000/mirror/hatchway-operator:' "$work/registry.yaml" &&
  grep -q 'value: "10.0.0.5:5000/mirror/hatchway-sidecar:' "$work/registry.yaml" ||
  fail "global.imageRegistry does not replace both images' registry"
render "$work/noregistry.yaml" --set image.registry= --set image.repository=localhost/hatchway/operator --set image.tag=e2e ||
  fail "helm template (no registry)"
grep -q '^          image: "localhost/hatchway/operator:e2e"$' "$work/noregistry.yaml" ||
  fail "an empty image.registry does not leave the repository as the whole name"
ok "global.imageRegistry replaces both registries; an empty registry leaves the repository whole"

# What a platform adds to the operator's pods, and overrides.
cat >"$work/extras.yaml" <<'YAML'
extraEnv:
  - name: HTTPS_PROXY
    value: http://proxy.example.com:3128
  - name: HATCHWAY_LOG
    value: debug
extraArgs: ["--log-format=json"]
extraVolumes:
  - name: ca-bundle
    configMap:
      name: corporate-ca
extraVolumeMounts:
  - name: ca-bundle
    mountPath: /etc/ssl/corporate
    readOnly: true
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        app.kubernetes.io/name: hatchway
podLabels:
  team: platform
podSecurityContext:
  runAsUser: 10001
  fsGroup: null
securityContext:
  readOnlyRootFilesystem: false
priorityClassName: system-cluster-critical
sidecar:
  priorityClassName: batch-low
  resources:
    requests: {cpu: 20m, memory: 48Mi}
    limits: {cpu: null}
YAML
render "$work/extras.yaml.out" -f "$work/extras.yaml" || fail "helm template (extras)"
extras=$(doc "$work/extras.yaml.out" Deployment "$fullname") || fail "no Deployment $fullname (extras)"
contains "$extras" '^            - --log-format=json$' '^            - name: HTTPS_PROXY$' \
  'mountPath: /etc/ssl/corporate$' ' name: corporate-ca$' '^          maxSkew: 1$' 'topologyKey: topology.kubernetes.io/zone$' '^        team: platform$' '^      priorityClassName: system-cluster-critical$' ||
  fail "extraArgs, extraEnv, extraVolumes(Mounts), topologySpreadConstraints, podLabels or priorityClassName not rendered"
# The chart's own env first: an extra of the same name comes last and wins.
[[ $(grep -n 'name: HATCHWAY_LOG$' <<<"$extras" | tail -1 | cut -d: -f1) -gt \
   $(grep -n 'name: HTTPS_PROXY$' <<<"$extras" | cut -d: -f1) ]] || fail "extraEnv does not come after the chart's env"
contains "$extras" '^        runAsUser: 10001$' '^        runAsNonRoot: true$' '^            readOnlyRootFilesystem: false$' \
  '^            allowPrivilegeEscalation: false$' || fail "a security context override does not merge with the defaults"
! grep -q 'fsGroup' <<<"$extras" || fail "podSecurityContext.fsGroup=null does not drop it"
# (helm merges maps: the limits stay the defaults but the CPU one, set to null.)
[[ $(env_value "$extras" HATCHWAY_SIDECAR_RESOURCES) == '"{\"limits\":{\"memory\":\"256Mi\"},\"requests\":{\"cpu\":\"20m\",\"memory\":\"48Mi\"}}"' ]] ||
  fail "sidecar.resources is not passed as JSON: $(env_value "$extras" HATCHWAY_SIDECAR_RESOURCES)"
[[ $(env_value "$deploy" HATCHWAY_SIDECAR_RESOURCES) == *'"limits\":{\"cpu\":\"1\",\"memory\":\"256Mi\"}'* ]] ||
  fail "default sidecar resources: $(env_value "$deploy" HATCHWAY_SIDECAR_RESOURCES)"
[[ $(env_value "$extras" HATCHWAY_SIDECAR_PRIORITY_CLASS) == '"batch-low"' ]] || fail "sidecar.priorityClassName not passed"
hook=$(doc "$work/extras.yaml.out" Job "$fullname-uninstall") || fail "no uninstall hook Job (extras)"
contains "$hook" '^        runAsUser: 10001$' || fail "the uninstall hook does not take podSecurityContext"
! grep -q maxSkew <<<"$hook" || fail "the uninstall hook took the operator's topologySpreadConstraints"
ok "extraEnv (after the chart's), extraArgs, extraVolumes, topologySpreadConstraints, podLabels, security contexts merged, sidecar resources and priority"

tls_names=$(env_value "$maxdeploy" HATCHWAY_TLS_NAMES)
want="\"$fullname,$fullname.$namespace,$fullname.$namespace.svc,$fullname.$namespace.svc.cluster.local,$fullname-api.$namespace.svc,hatchway.example.com,*.apps.example.com,10.0.0.1\""
[[ $tls_names == "$want" ]] || fail "HATCHWAY_TLS_NAMES $tls_names, wanted $want"
[[ $(env_value "$maxdeploy" HATCHWAY_NAMESPACES) == '"a,b"' ]] || fail "HATCHWAY_NAMESPACES is not a,b"
[[ $(env_value "$maxdeploy" HATCHWAY_TLS_DIR) == '"/etc/hatchway/tls"' ]] || fail "HATCHWAY_TLS_DIR missing with tls.secretName"
[[ $(env_value "$maxdeploy" HATCHWAY_WILDCARD_DOMAIN) == '"apps.example.com:30443"' ]] || fail "HATCHWAY_WILDCARD_DOMAIN"
[[ $(env_value "$maxdeploy" HATCHWAY_PUBLIC_URL) == '"https://hatchway.example.com"' ]] || fail "HATCHWAY_PUBLIC_URL"
contains "$maxdeploy" '^            secretName: router-tls$' '^            defaultMode: 0440$' \
  '^              mountPath: /etc/hatchway/tls$' '^              readOnly: true$' ||
  fail "tls.secretName volume/mount missing"
ok "maximal: TLS names (ingress host, *.wildcard without port, public host, extra), namespaces a,b, TLS dir and volume"

no_tunnel=$(render /dev/stdout --set router.tunnels=false --show-only templates/deployment.yaml)
[[ $(env_value "$no_tunnel" HATCHWAY_TUNNEL_URL) == '""' ]] || fail "router.tunnels=false still sets HATCHWAY_TUNNEL_URL"
ok "router.tunnels=false empties HATCHWAY_TUNNEL_URL"

grace=$(render /dev/stdout --set sidecar.resumeGraceSeconds=30 --show-only templates/deployment.yaml)
[[ $(env_value "$grace" HATCHWAY_RESUME_GRACE_SECONDS) == '"30"' ]] || fail "sidecar.resumeGraceSeconds is not HATCHWAY_RESUME_GRACE_SECONDS"
[[ $(env_value "$no_tunnel" HATCHWAY_RESUME_GRACE_SECONDS) == '"600"' ]] || fail "the resume grace time is not 600 s by default"
ok "sidecar.resumeGraceSeconds sets HATCHWAY_RESUME_GRACE_SECONDS (600 by default)"

unrecorded=$(render /dev/stdout --set sidecar.recordShells=false --show-only templates/deployment.yaml)
[[ $(env_value "$unrecorded" HATCHWAY_RECORD_SHELLS) == '"false"' ]] || fail "sidecar.recordShells=false is not HATCHWAY_RECORD_SHELLS=false"
[[ $(env_value "$no_tunnel" HATCHWAY_RECORD_SHELLS) == '"true"' ]] || fail "terminals are not recorded by default"
if render /dev/null --set sidecar.recordShells=yes 2>/dev/null; then fail "sidecar.recordShells=yes passed the schema"; fi
ok "sidecar.recordShells sets HATCHWAY_RECORD_SHELLS (true by default; booleans only)"

declared=$(render /dev/stdout --set router.portForward=declared --show-only templates/deployment.yaml)
[[ $(env_value "$declared" HATCHWAY_PORT_FORWARD_DEFAULT) == '"declared"' ]] || fail "router.portForward=declared is not HATCHWAY_PORT_FORWARD_DEFAULT=declared"
[[ $(env_value "$no_tunnel" HATCHWAY_PORT_FORWARD_DEFAULT) == '"any"' ]] || fail "the port-forward default is not any"
if render /dev/null --set router.portForward=all 2>/dev/null; then fail "router.portForward=all passed the schema"; fi
ok "router.portForward sets HATCHWAY_PORT_FORWARD_DEFAULT (any by default; any, declared or published only)"

all_default=$(render /dev/stdout)
contains "$all_default" '^kind: APIService$' '^  name: v1alpha1.access.hatchway.dev$' '^  groupPriorityMinimum: 100$' \
  '^  name: .*-front-proxy-reader$' '^  namespace: kube-system$' '^  name: extension-apiserver-authentication-reader$' \
  'value: "0.0.0.0:8444"' '^    resources: \[containers/exec, containers/portforward, containers/weblogin\]$' ||
  fail "the aggregated API (APIService, front-proxy reader binding, port 8444, user rules) is missing by default"
no_api=$(render /dev/stdout --set aggregatedApi.enabled=false)
if grep -qE 'APIService|8444|access\.hatchway\.dev|kube-system' <<<"$no_api"; then
  fail "aggregatedApi.enabled=false still renders parts of the aggregated API"
fi
ok "aggregatedApi: APIService, Service, port, RBAC by default; none of it when disabled"

# Services.
headless=$(doc "$work/default.yaml" Service "$fullname-replicas") || fail "no Service $fullname-replicas"
contains "$headless" '^  clusterIP: None$' '^  publishNotReadyAddresses: false$' '^      port: 8443$' '^    - name: https$' ||
  fail "headless Service: clusterIP None, publishNotReadyAddresses false, port https 8443"
ok "headless Service $fullname-replicas: clusterIP None, ready endpoints only"

svc=$(doc "$work/default.yaml" Service "$fullname") || fail "no Service $fullname"
contains "$svc" '^  type: ClusterIP$' '^      port: 443$' '^      targetPort: https$' || fail "Service $fullname defaults"
! grep -q nodePort <<<"$svc" || fail "ClusterIP Service renders a nodePort"
maxsvc=$(doc "$work/max.yaml" Service "$fullname") || fail "no Service $fullname (maximal)"
contains "$maxsvc" '^  type: NodePort$' '^      nodePort: 30443$' || fail "NodePort Service does not render nodePort 30443"
ok "Service: ClusterIP 443 by default; NodePort renders nodePort 30443"

# RBAC.
edit=$(doc "$work/default.yaml" ClusterRole "$fullname-edit") || fail "no ClusterRole $fullname-edit"
contains "$edit" 'rbac.authorization.k8s.io/aggregate-to-edit: "true"' 'rbac.authorization.k8s.io/aggregate-to-admin: "true"' ||
  fail "ClusterRole $fullname-edit lacks aggregate-to-edit/admin labels"
view=$(doc "$work/default.yaml" ClusterRole "$fullname-view") || fail "no ClusterRole $fullname-view"
contains "$view" 'rbac.authorization.k8s.io/aggregate-to-view: "true"' || fail "ClusterRole $fullname-view lacks aggregate-to-view"
! grep -q aggregate-to-edit <<<"$view" || fail "view ClusterRole aggregates into edit"
ok "aggregated ClusterRoles: -edit into edit+admin, -view into view"

unagg=$(render /dev/stdout --set rbac.aggregateToEdit=false --set rbac.aggregateToView=false --show-only templates/rbac.yaml)
! grep -q 'aggregate-to-' <<<"$unagg" || fail "aggregation labels with aggregateToEdit/View false"
ok "rbac.aggregateToEdit/View=false: no aggregation labels"

# No Role or ClusterRole rule may list or watch Secrets, or read one that
# it does not name (in any render): the router faces the internet and
# derives every key from the root secret, which it reads by name.
check_secrets() {
  python3 - "$@" <<'PY'
import re, sys
bad = []
for path in sys.argv[1:]:
    for d in re.split(r"(?m)^---\s*$", open(path).read()):
        if not re.search(r"(?m)^kind:\s*(Cluster)?Role\s*$", d):
            continue
        name = re.search(r"(?m)^  name:\s*(\S+)", d).group(1)
        rules = d.split("\nrules:\n", 1)
        if len(rules) < 2:
            continue
        for rule in re.split(r"(?m)^\s*- apiGroups:", rules[1])[1:]:
            def field(key):
                m = re.search(r"(?m)^\s*" + key + r":\s*\[(.*?)\]", rule)
                if m:
                    return [x.strip().strip('"') for x in m.group(1).split(",")]
                m = re.search(r"(?m)^(\s*)" + key + r":\s*\n((?:\1\s*- .*\n?)+)", rule)
                if m:
                    return [x.strip()[2:].strip().strip('"') for x in m.group(2).splitlines()]
                return []
            resources, verbs = field("resources"), field("verbs")
            if not verbs:
                sys.exit(f"{path}: {name}: a rule whose verbs cannot be read")
            if not ({"secrets", "*"} & set(resources)):
                continue
            named = bool(field("resourceNames"))
            if ({"list", "watch", "*"} & set(verbs)) or ("get" in verbs and not named):
                bad.append(f"{path}: {name}: {resources} {verbs}")
if bad:
    sys.exit("rules granting list/watch, or get without names, on secrets:\n" + "\n".join(bad))
PY
}
check_secrets "$work/default.yaml" "$work/max.yaml" || fail "a rule grants list/watch, or get without names, on secrets"
ok "no Role/ClusterRole rule grants list or watch on secrets, or get on a Secret it does not name"

contains "$(doc "$work/default.yaml" RoleBinding "$fullname-client-config")" '^    name: system:authenticated$' ||
  fail "ConfigMap hatchway-client not readable by system:authenticated"
contains "$(doc "$work/default.yaml" Role "$fullname-client-config")" 'resourceNames: \[hatchway-client\]' '^    verbs: \[get\]$' ||
  fail "client-config Role is not get on hatchway-client only"
ok "system:authenticated may get ConfigMap hatchway-client (and nothing else)"

# The admission policy on Containers' references (docs/security.md).
vap=$(doc "$work/default.yaml" ValidatingAdmissionPolicy "$fullname-container-references") ||
  fail "no ValidatingAdmissionPolicy $fullname-container-references by default"
contains "$vap" "check\\('get'\\)" "resource\\('secrets'\\)" "resource\\('configmaps'\\)" "resource\\('pods'\\)" "check\\('create'\\)" \
  "\"$fullname-root\"" '^  failurePolicy: Fail$' '^        operations: \[CREATE\]$' '!variables.raisesPrivilege \|\|' \
  "securityContext.\?privileged" "capabilities.\?add" "sysctls" ||
  fail "the admission policy does not check secrets, configmaps, create pods and the root secret at CREATE only"
contains "$(doc "$work/default.yaml" ValidatingAdmissionPolicyBinding "$fullname-container-references")" \
  "^  policyName: $fullname-container-references$" '^  validationActions: \[Deny\]$' || fail "the admission policy is not bound with Deny"
novap=$(render /dev/stdout --set rbac.admissionPolicy=false)
! grep -q 'kind: ValidatingAdmissionPolicy' <<<"$novap" || fail "admission policy rendered with rbac.admissionPolicy=false"
ok "ValidatingAdmissionPolicy on Containers' Secret/ConfigMap/ServiceAccount references and raised privileges, bound with Deny; off with rbac.admissionPolicy=false"

# NetworkPolicies: the operator's own, and the setting for Containers' pods.
np=$(doc "$work/default.yaml" NetworkPolicy "$fullname") || fail "no NetworkPolicy $fullname by default"
contains "$np" '^        - port: https$' '^        - port: metrics$' '^  policyTypes: \[Ingress\]$' || fail "operator NetworkPolicy: https and metrics ports"
contains "$deploy" '^            - name: HATCHWAY_NETWORK_POLICY$' '^              value: "true"$' \
  "^              value: \"app.kubernetes.io/component=operator,app.kubernetes.io/instance=$release,app.kubernetes.io/name=hatchway\"$" ||
  fail "HATCHWAY_NETWORK_POLICY / HATCHWAY_OPERATOR_POD_LABELS not set"
nsnp=$(render /dev/stdout --set networkPolicy.metricsNamespaceLabels.team=monitoring)
contains "$nsnp" '^              value: "team=monitoring"$' '^              team: monitoring$' || fail "metricsNamespaceLabels not passed on"
! grep -q 'kind: NetworkPolicy' <<<"$(render /dev/stdout --set networkPolicy.enabled=false)" || fail "NetworkPolicy rendered while disabled"
ok "NetworkPolicies: the operator's (https from all, metrics from the metrics namespaces) and Containers' pods' (HATCHWAY_NETWORK_POLICY)"

# Metrics: ServiceMonitor xor prometheus.io annotations.
! has "$work/default.yaml" ServiceMonitor "$fullname" || fail "ServiceMonitor rendered while disabled"
sm=$(doc "$work/max.yaml" ServiceMonitor "$fullname") || fail "ServiceMonitor not rendered while enabled"
contains "$sm" '^    - port: metrics$' '^      scheme: https$' '^      path: /metrics$' '^        serverName: hatchway-router$' '^        insecureSkipVerify: false$' \
  '^      app.kubernetes.io/component: router-replicas$' ||
  fail "ServiceMonitor endpoint: the replicas' metrics port, https /metrics, serverName hatchway-router, verified"
ok "ServiceMonitor only when enabled (the replicas' metrics port, https, /metrics, verified as hatchway-router)"
# /metrics is off the user-facing listener: its own port, on the headless
# Service only.
contains "$deploy" '^            - name: metrics$' '^              containerPort: 9443$' '^              value: "0.0.0.0:9443"$' ||
  fail "operator container: no metrics port 9443 (HATCHWAY_METRICS_LISTEN)"
contains "$headless" '^    - name: metrics$' '^      port: 9443$' || fail "headless Service lacks the metrics port"
! grep -q 'name: metrics' <<<"$svc" || fail "the user-facing Service exposes the metrics port"
ok "metrics on their own port 9443: the pod and the headless Service, not the user-facing Service"
smca=$(render /dev/stdout --set metrics.serviceMonitor.enabled=true --show-only templates/servicemonitor.yaml)
contains "$smca" "^            name: $fullname-router-ca$" '^            key: ca.crt$' || fail "ServiceMonitor CA is not $fullname-router-ca/ca.crt"
ok "ServiceMonitor CA: $fullname-router-ca ca.crt (tls.secretName's when set)"

contains "$deploy" '^        prometheus.io/scrape: "true"$' '^        prometheus.io/port: "9443"$' '^        prometheus.io/scheme: "https"$' ||
  fail "prometheus.io annotations missing without ServiceMonitor"
! grep -q 'prometheus.io/' <<<"$maxdeploy" || fail "prometheus.io annotations present with a ServiceMonitor"
ok "prometheus.io pod annotations only without a ServiceMonitor"

# PDB.
has "$work/default.yaml" PodDisruptionBudget "$fullname" || fail "no PodDisruptionBudget with 2 replicas"
one=$(render /dev/stdout --set replicaCount=1)
! grep -q '^kind: PodDisruptionBudget' <<<"$one" || fail "PodDisruptionBudget with 1 replica"
ok "PodDisruptionBudget only with more than one replica"

# Ingress.
! has "$work/default.yaml" Ingress "$fullname" || fail "Ingress rendered while disabled"
ing=$(doc "$work/max.yaml" Ingress "$fullname") || fail "no Ingress (maximal)"
contains "$ing" '^    - host: "hatchway.example.com"$' '^    - host: "\*.apps.example.com"$' '^  ingressClassName: nginx$' ||
  fail "Ingress rules: API host and *.wildcard without port"
ok "Ingress: API host and *.apps.example.com (port stripped) rules"

# Uninstall hook.
hook=$(doc "$work/default.yaml" Job "$fullname-uninstall") || fail "no uninstall Job"
contains "$hook" '^    helm.sh/hook: pre-delete$' '^    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded$' \
  '^          args: \["uninstall"\]$' '^      restartPolicy: Never$' '^        runAsNonRoot: true$' \
  "^            - name: HATCHWAY_DEPLOYMENT_NAME\$" "^              value: \"$fullname\"\$" ||
  fail "uninstall hook is not a pre-delete Job running \`uninstall\`"
role=$(doc "$work/default.yaml" Role "$fullname") || fail "no Role $fullname"
contains "$role" '^    resources: \[deployments/scale\]$' || fail "the hook may not scale the Deployment"
nohook=$(render /dev/stdout --set uninstallHook.enabled=false)
! grep -q 'helm.sh/hook: pre-delete' <<<"$nohook" || fail "uninstall hook rendered while disabled"
ok "uninstall hook: pre-delete Job (\`uninstall\` of Deployment $fullname, which its Role may scale), only when enabled"

# The chart must not create what the operator owns.
if grep -Eq '^kind: (Secret|ConfigMap)$' "$work/default.yaml" "$work/max.yaml"; then
  fail "the chart renders a Secret or ConfigMap (the operator owns them)"
fi
ok "no Secret or ConfigMap rendered (the operator owns them)"

# Standard labels on every object.
python3 - "$work/default.yaml" "$work/max.yaml" <<'PY' || fail "objects without the standard labels"
import re, sys
want = ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by", "helm.sh/chart", "app.kubernetes.io/component"]
bad = []
for path in sys.argv[1:]:
    for d in re.split(r"(?m)^---\s*$", open(path).read()):
        k = re.search(r"(?m)^kind:\s*(\S+)", d)
        if not k:
            continue
        meta = re.search(r"(?m)^metadata:\n((?:  .*\n?)*)", d).group(1)
        labels = re.search(r"(?m)^  labels:\n((?:    .*\n?)*)", meta)
        keys = re.findall(r"(?m)^    ([^:\s]+):", labels.group(1)) if labels else []
        missing = [w for w in want if w not in keys]
        if missing:
            bad.append(f"{path}: {k.group(1)}: {missing}")
if bad:
    sys.exit("\n".join(bad))
PY
ok "every rendered object carries the standard labels"

# `helm test`: a pod asking the Service for /readyz with the published CA,
# and discovery only where the aggregated API is installed.
check_pod=$(doc "$work/default.yaml" Pod "$fullname-check") || fail "no helm test Pod $fullname-check"
contains "$check_pod" '^    helm.sh/hook: test$' '^        - check$' "^        - --url=https://$fullname.$namespace.svc:443\$" \
  '^        - --ca=/etc/hatchway-client/ca.crt$' '^        - --discovery=access.hatchway.dev/v1alpha1$' \
  '^        name: hatchway-client$' '^  serviceAccountName: default$' '^    runAsNonRoot: true$' ||
  fail "the helm test Pod does not check /readyz with the published CA and the aggregated discovery"
noapi=$(render /dev/stdout --set aggregatedApi.enabled=false)
grep -q -- '--ca=/etc/hatchway-client/ca.crt' <<<"$noapi" && ! grep -q -- '--discovery=' <<<"$noapi" ||
  fail "the helm test Pod asks for discovery without the aggregated API"
ok "helm test: a Pod checks /readyz with the published CA, and discovery with aggregatedApi.enabled"

# Monitoring, alerts, the dashboard, cert-manager and Gateway API: off by
# default, each rendered as its project expects when on.
for kind in PodMonitor PrometheusRule Certificate TLSRoute; do
  ! grep -q "^kind: $kind\$" "$work/default.yaml" || fail "$kind rendered by default"
done
optional=(
  --set metrics.podMonitor.enabled=true --set metrics.prometheusRule.enabled=true
  --set metrics.grafanaDashboard.enabled=true --set metrics.grafanaDashboard.namespace=monitoring
  --set 'watchNamespaces={team-a,team-b}'
  --set certManager.enabled=true --set certManager.issuerRef.name=platform-ca --set certManager.issuerRef.kind=ClusterIssuer
  --set 'tls.extraNames={10.0.0.1}' --set publicUrl=https://hatchway.example.com
  --set webApps.wildcardDomain=apps.example.com:30443
  --set gatewayApi.tlsRoute.enabled=true --set 'gatewayApi.tlsRoute.parentRefs[0].name=edge'
)
render "$work/optional.yaml" "${optional[@]}" || fail "helm template (optional objects)"
pm=$(doc "$work/optional.yaml" PodMonitor "$fullname-sidecars") || fail "no PodMonitor"
contains "$pm" '^      app.kubernetes.io/name: hatchway-container$' '^      - team-a$' '^    - port: metrics$' ||
  fail "the PodMonitor does not select the sidecars' metrics port in the served namespaces"
rule=$(doc "$work/optional.yaml" PrometheusRule "$fullname") || fail "no PrometheusRule"
contains "$rule" '^  groups:$' '^        - alert: HatchwayNoLeader$' '^        - alert: HatchwayCertificateExpiresSoon$' \
  '\{\{ \$value' || fail "the PrometheusRule does not carry rules/hatchway.rules.yaml as it is"
python3 - "$work/optional.yaml" <<'PY' || fail "the dashboard ConfigMap's JSON"
import json, re, sys
text = open(sys.argv[1]).read()
doc = next(d for d in re.split(r"(?m)^---\s*$", text) if "name: hw-hatchway-dashboard" in d)
assert "namespace: monitoring" in doc and 'grafana_dashboard: "1"' in doc, doc[:400]
body = doc.split("hatchway.json: |-\n", 1)[1]
board = json.loads("\n".join(l[4:] for l in body.splitlines()))
assert board["uid"] == "hatchway" and len(board["panels"]) >= 15, board.keys()
assert all(t["expr"] for p in board["panels"] for t in p["targets"])
PY
cert=$(doc "$work/optional.yaml" Certificate "$fullname") || fail "no Certificate"
contains "$cert" "^  secretName: $fullname-tls\$" '^    name: platform-ca$' '^    kind: ClusterIssuer$' \
  '^    - hatchway-router$' "^    - $fullname.$namespace.svc\$" '^    - hatchway.example.com$' \
  "^    - '\\*.apps.example.com'\$" '^  ipAddresses:$' '^    - 10.0.0.1$' ||
  fail "the Certificate does not name what the router serves into <fullname>-tls"
optdeploy=$(doc "$work/optional.yaml" Deployment "$fullname")
contains "$optdeploy" "^            secretName: $fullname-tls\$" 'name: HATCHWAY_TLS_DIR' ||
  fail "the replicas do not mount cert-manager's Secret"
route=$(doc "$work/optional.yaml" TLSRoute "$fullname") || fail "no TLSRoute"
contains "$route" '^    - name: edge$' '^    - hatchway.example.com$' "^    - '\\*.apps.example.com'\$" \
  "^        - name: $fullname\$" '^          port: 443$' || fail "the TLSRoute does not route both hosts to the Service"
render /dev/null --set certManager.enabled=true 2>"$work/err.txt" && fail "certManager without an issuer rendered"
grep -q 'certManager.issuerRef.name' "$work/err.txt" || fail "certManager without an issuer: $(cat "$work/err.txt")"
render /dev/null --set gatewayApi.tlsRoute.enabled=true --set 'gatewayApi.tlsRoute.parentRefs[0].name=edge' 2>"$work/err.txt" &&
  fail "a TLSRoute without hostnames rendered"
grep -q 'needs hostnames' "$work/err.txt" || fail "a TLSRoute without hostnames: $(cat "$work/err.txt")"
ok "PodMonitor, PrometheusRule (the rule file as is), dashboard ConfigMap, Certificate (every name, mounted), TLSRoute; each off by default, missing settings named"

# ---------------------------------------------------------------------------
# Schema violations make rendering fail.
schema_refuses() { # DESCRIPTION ARGS...
  local what=$1
  shift
  if render "$work/bad.yaml" "$@" 2>"$work/bad.err"; then
    fail "helm template accepted $what"
  fi
  grep -qi 'schema' "$work/bad.err" || { cat "$work/bad.err" >&2; fail "$what failed, but not on the schema"; }
  ok "schema refuses $what"
}
schema_refuses "replicaCount=-1" --set replicaCount=-1
schema_refuses "service.type=Bogus" --set service.type=Bogus
schema_refuses "logFormat=xml" --set logFormat=xml
schema_refuses "an unknown top-level value" --set bogus=1
schema_refuses "a registry with a scheme" --set global.imageRegistry=https://registry.example.com
schema_refuses "an unknown sidecar value" --set sidecar.bogus=1
schema_refuses "an extraArgs entry that is not a string" --set 'extraArgs[0].a=1'
schema_refuses "an extraEnv entry without a name" --set 'extraEnv[0].value=1'
# A parent chart's globals are its own: any pass (a subchart's schema
# that refused them would make the parent uninstallable).
render "$work/global.yaml" --set global.storageClass=fast --set global.labels.team=x --set 'global.list={a,b}' ||
  fail "the schema refuses a parent chart's globals"
ok "schema takes any global.* (subchart use), refuses unknown values elsewhere"

# ---------------------------------------------------------------------------
# 3. The chart's CRD is the generated one.
if ! cmp -s charts/hatchway/crds/container.yaml crds/container.yaml; then
  diff -u crds/container.yaml charts/hatchway/crds/container.yaml >&2 || true
  fail "charts/hatchway/crds/container.yaml differs from crds/container.yaml: cp crds/container.yaml charts/hatchway/crds/container.yaml"
fi
ok "charts/hatchway/crds/container.yaml is a copy of crds/container.yaml"

echo "chart checks: $passed passed"
