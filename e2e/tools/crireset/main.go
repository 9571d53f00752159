// crireset stops and removes every pod sandbox of a CRI runtime, the way
// `crictl rmp --all --force` does, so that `e2e/cluster down` leaves no
// container, network namespace, veth or CNI IP allocation behind: the
// runtime runs the CNI DEL for each sandbox. It uses the same CRI client
// library as the kubelet it is built beside.
//
// Usage: crireset unix:///path/to/containerd.sock
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace/noop"
	criclient "k8s.io/cri-client/pkg"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: crireset unix:///path/to/cri.sock")
		os.Exit(2)
	}
	rs, err := criclient.NewRemoteRuntimeService(os.Args[1], 10*time.Second, noop.NewTracerProvider(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crireset: connect:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pods, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "crireset: list pod sandboxes:", err)
		os.Exit(1)
	}
	failed := 0
	for _, p := range pods {
		name := p.GetMetadata().GetNamespace() + "/" + p.GetMetadata().GetName()
		if err := rs.StopPodSandbox(ctx, p.GetId()); err != nil {
			fmt.Fprintf(os.Stderr, "crireset: stop %s: %v\n", name, err)
			failed++
			continue
		}
		if err := rs.RemovePodSandbox(ctx, p.GetId()); err != nil {
			fmt.Fprintf(os.Stderr, "crireset: remove %s: %v\n", name, err)
			failed++
			continue
		}
		fmt.Printf("removed pod sandbox %s\n", name)
	}
	if failed > 0 {
		os.Exit(1)
	}
}
