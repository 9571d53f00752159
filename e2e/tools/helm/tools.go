//go:build tools

// Package tools pins helm's command so `go mod tidy` keeps its dependencies;
// e2e/cluster builds helm.sh/helm/v3/cmd/helm from this module.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
