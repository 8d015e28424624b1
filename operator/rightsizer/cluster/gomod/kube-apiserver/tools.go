//go:build tools

// Makes `go mod tidy` keep the Kubernetes commands rightsizer builds, and their dependencies, in go.mod: the
// API server for the control plane, and the rest for `rightsizer cluster up --node`.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
