//go:build tools

// Makes `go mod tidy` keep containerd's daemon, its runc shim and ctr, and their dependencies, in go.mod.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
