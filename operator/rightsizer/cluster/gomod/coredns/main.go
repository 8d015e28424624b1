// Cluster DNS for `rightsizer cluster up --node`: CoreDNS (the DNS server kubeadm installs) with only the
// plugins the node's Corefile uses, run on the host beside kube-proxy. In-cluster clients need it: kopf, for one,
// reaches the API server as kubernetes.default.svc.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loop"
	"github.com/coredns/coredns/coremain"
)

// The order plugins handle a query in (CoreDNS's plugin.cfg order, restricted to those imported above).
func init() {
	dnsserver.Directives = []string{"bind", "errors", "cache", "loop", "kubernetes", "forward"}
}

func main() {
	coremain.Run()
}
