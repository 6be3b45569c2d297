{{/* Chart name. */}}
{{- define "konnector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the prefix of every resource name. */}}
{{- define "konnector.fullname" -}}
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

{{/* Cluster-wide names carry the release namespace: several releases (one per app cluster in
control-plane mode) can share a cluster. */}}
{{- define "konnector.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "konnector.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "konnector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "konnector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "konnector.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "konnector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: konnector
{{- end -}}

{{- define "konnector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "konnector.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "konnector.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "konnector.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.leaseNamespace -}}
{{- end -}}

{{/*
Fleet mode (fleet.enabled): control-plane mode for the app cluster of every AppClusterBinding,
so the per-cluster control-plane values make no sense with it and are refused rather than
silently ignored. Renders nothing; fails on a bad combination.
*/}}
{{- define "konnector.checkFleet" -}}
{{- if .Values.fleet.enabled -}}
{{- if .Values.controlPlaneMode.enabled -}}
{{- fail "fleet.enabled and controlPlaneMode.enabled exclude each other: fleet mode serves every AppClusterBinding in control-plane mode by itself" -}}
{{- end -}}
{{- if .Values.appClusterKubeconfigSecret.name -}}
{{- fail "fleet.enabled takes each app cluster's kubeconfig Secret from its AppClusterBinding: unset appClusterKubeconfigSecret.name" -}}
{{- end -}}
{{- if .Values.bindingRootNamespace -}}
{{- fail "fleet.enabled derives each binding root namespace from its AppClusterBinding: unset bindingRootNamespace" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Whether the ServiceAccount acts on the control plane (control-plane or fleet mode). */}}
{{- define "konnector.onControlPlane" -}}
{{- if or .Values.controlPlaneMode.enabled .Values.fleet.enabled -}}true{{- end -}}
{{- end -}}

{{/* Control-plane mode: the binding root namespace (required). */}}
{{- define "konnector.rootNamespace" -}}
{{- required "bindingRootNamespace is required when controlPlaneMode.enabled is true" .Values.bindingRootNamespace -}}
{{- end -}}

{{/* Control-plane mode: the namespace of the app cluster kubeconfig Secret. */}}
{{- define "konnector.appSecretNamespace" -}}
{{- default (include "konnector.rootNamespace" .) .Values.appClusterKubeconfigSecret.namespace -}}
{{- end -}}

{{/* Control-plane mode: the name of the app cluster kubeconfig Secret (required). */}}
{{- define "konnector.appSecretName" -}}
{{- required "appClusterKubeconfigSecret.name is required when controlPlaneMode.enabled is true" .Values.appClusterKubeconfigSecret.name -}}
{{- end -}}

{{/* The ServiceAccount as an RBAC subject. */}}
{{- define "konnector.subject" -}}
- kind: ServiceAccount
  name: {{ include "konnector.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end -}}

{{/*
Where the claimed resources may be read and written: `cluster` or `namespaces`. Empty means
`cluster` in fleet mode (its one watch per resource spans all namespaces; `namespaces` is
refused), `namespaces` in control-plane mode, where a cluster-wide grant would let each tenant's konnector
read and rewrite the claimed objects (for example the kubeconfig Secrets) of every other tenant on
the shared control plane, and `cluster` in default mode (the earlier behaviour).
*/}}
{{- define "konnector.claimedScope" -}}
{{- $scope := .Values.rbac.claimedResourcesScope | default (ternary "namespaces" "cluster" (and .Values.controlPlaneMode.enabled (not .Values.fleet.enabled))) -}}
{{- if not (has $scope (list "cluster" "namespaces")) -}}
{{- fail (printf "rbac.claimedResourcesScope must be cluster or namespaces (or empty), not %q" $scope) -}}
{{- end -}}
{{- if and .Values.fleet.enabled (eq $scope "namespaces") -}}
{{- fail "fleet.enabled needs rbac.claimedResourcesScope=cluster: the fleet lists and watches each claimed resource once in all namespaces for every app cluster" -}}
{{- end -}}
{{- if and (eq $scope "cluster") .Values.rbac.claimedResourceNamespaces -}}
{{- fail "rbac.claimedResourceNamespaces needs rbac.claimedResourcesScope=namespaces" -}}
{{- end -}}
{{- $scope -}}
{{- end -}}

{{/* Namespaces scope: the ClusterRole holding the claimed-resource rules. It is never bound
cluster-wide, only by RoleBindings in the namespaces the konnector serves. */}}
{{- define "konnector.claimedRoleName" -}}
{{- include "konnector.clusterName" . }}-claimed-resources
{{- end -}}

{{/*
Rules on the bound resources listed in values. The verbs depend on the mode: in default mode the
ServiceAccount acts in the app cluster (the consumer side), in control-plane mode on the control
plane (the provider side). Arguments: the root context.
*/}}
{{- define "konnector.boundResourceRules" -}}
{{- $cp := include "konnector.onControlPlane" . -}}
{{- range .Values.rbac.boundResources }}
- apiGroups: [{{ .apiGroup | default "" | quote }}]
  resources:
  {{- range .resources }}
    - {{ . | quote }}
  {{- end }}
  {{- if $cp }}
  # Provider side: watch, server-side apply (patch, and create when the apply creates), delete.
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
  {{- else }}
  # Consumer side: watch, adopt provider-created objects (create), finalizer merge patches.
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [{{ .apiGroup | default "" | quote }}]
  resources:
  {{- range .resources }}
    - {{ printf "%s/status" . | quote }}
  {{- end }}
  # Consumer side: the provider's status is written to the downstream /status.
  verbs: ["update"]
  {{- end }}
{{- end }}
{{- end -}}

{{/*
Rules on the claimed resources listed in values: mirrored both ways between consumer and service
namespaces (list and watch per namespace, create, update, owner-annotation patch, delete).
Arguments: the root context.
*/}}
{{- define "konnector.claimedResourceRules" -}}
{{- range .Values.rbac.claimedResources }}
- apiGroups: [{{ .apiGroup | default "" | quote }}]
  resources:
  {{- range .resources }}
    - {{ . | quote }}
  {{- end }}
  # Claimed resources are mirrored both ways between consumer and service namespaces.
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}
{{- end -}}
