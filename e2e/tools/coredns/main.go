// CoreDNS for the e2e cluster's Service DNS, with only the plugins the
// Corefile in e2e/manifests/coredns.yaml uses (the stock binary links every
// plugin, including cloud SDKs, which would double the cold build time).
// Directive order stays CoreDNS's own (dnsserver.Directives); a plugin that
// is not linked here is simply unavailable.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() { coremain.Run() }
