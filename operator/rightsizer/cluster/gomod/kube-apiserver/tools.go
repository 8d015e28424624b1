//go:build tools

// Makes `go mod tidy` keep the kube-apiserver command and its dependencies in go.mod.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
