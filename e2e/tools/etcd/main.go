// etcd for the e2e cluster: the same entry point as etcd's own server
// binary, built from the go.etcd.io/etcd/server/v3 module at the version
// the pinned Kubernetes release uses (build/dependencies.yaml).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
