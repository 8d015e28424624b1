//go:build tools

// Makes `go mod tidy` keep the kustomize command and its dependencies in go.mod.
package tools

import _ "sigs.k8s.io/kustomize/kustomize/v5"
