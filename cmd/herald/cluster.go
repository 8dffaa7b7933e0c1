package main

import (
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/heraldhq/herald/broker/natsjs"
)

// clusterFlags are serve's cluster flags.
type clusterFlags struct {
	nodes string // --cluster: name=host:port,...
	node  string // --node: which of them this is
	name  string // --cluster-name
}

var nodeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// parse turns --cluster and --node into the embedded node's cluster
// configuration; nil, nil without --cluster.
func (f clusterFlags) parse() (*natsjs.ClusterConfig, error) {
	if f.nodes == "" {
		if f.node != "" {
			return nil, fmt.Errorf("--node %q needs --cluster (the list of every node: name=host:port,...)", f.node)
		}
		return nil, nil
	}
	if f.node == "" {
		return nil, fmt.Errorf("--cluster needs --node: which of its nodes this one is")
	}
	cfg := &natsjs.ClusterConfig{Name: f.name}
	names, addrs := map[string]bool{}, map[string]string{}
	for entry := range strings.SplitSeq(f.nodes, ",") {
		entry = strings.TrimSpace(entry)
		name, addr, ok := strings.Cut(entry, "=")
		if !ok {
			return nil, fmt.Errorf("--cluster: %q: want name=host:port, for example n1=10.0.0.1:6222", entry)
		}
		if !nodeName.MatchString(name) {
			return nil, fmt.Errorf("--cluster: node name %q: want letters, digits, - and _ (at most 64)", name)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" || port == "0" {
			return nil, fmt.Errorf("--cluster: node %s: address %q: want host:port with a fixed port (the other nodes dial it)", name, addr)
		}
		if names[name] {
			return nil, fmt.Errorf("--cluster: node name %s appears twice", name)
		}
		if other, dup := addrs[addr]; dup {
			return nil, fmt.Errorf("--cluster: nodes %s and %s have the same address %s", other, name, addr)
		}
		names[name], addrs[addr] = true, name
		if name == f.node {
			cfg.Addr = addr
		} else {
			cfg.Peers = append(cfg.Peers, addr)
		}
	}
	if cfg.Addr == "" {
		return nil, fmt.Errorf("--node %s is not one of the --cluster nodes", f.node)
	}
	if len(names) < 3 {
		return nil, fmt.Errorf("--cluster lists %d node(s); a cluster needs at least 3 (one may fail while the others keep a quorum)", len(names))
	}
	return cfg, nil
}
