package main

import (
	"slices"
	"strings"
	"testing"
)

func TestClusterFlags(t *testing.T) {
	const three = "n1=10.0.0.1:6222,n2=10.0.0.2:6222, n3=10.0.0.3:6222"
	cfg, err := clusterFlags{nodes: three, node: "n2", name: "prod"}.parse()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "prod" || cfg.Addr != "10.0.0.2:6222" || !slices.Equal(cfg.Peers, []string{"10.0.0.1:6222", "10.0.0.3:6222"}) || cfg.Nodes() != 3 {
		t.Errorf("parsed %+v", cfg)
	}
	if cfg, err := (clusterFlags{}).parse(); cfg != nil || err != nil {
		t.Errorf("no --cluster: %+v, %v; want nil, nil", cfg, err)
	}
	for _, c := range []struct {
		f    clusterFlags
		want string
	}{
		{clusterFlags{node: "n1"}, "--node \"n1\" needs --cluster"},
		{clusterFlags{nodes: three}, "--cluster needs --node"},
		{clusterFlags{nodes: three, node: "n4"}, "--node n4 is not one of the --cluster nodes"},
		{clusterFlags{nodes: "n1=a:1,n2=b:1", node: "n1"}, "needs at least 3"},
		{clusterFlags{nodes: "n1=a:1,n1=b:1,n3=c:1", node: "n1"}, "appears twice"},
		{clusterFlags{nodes: "n1=a:1,n2=a:1,n3=c:1", node: "n1"}, "have the same address"},
		{clusterFlags{nodes: "n1=a:0,n2=b:1,n3=c:1", node: "n1"}, "fixed port"},
		{clusterFlags{nodes: "n1=a,n2=b:1,n3=c:1", node: "n1"}, "fixed port"},
		{clusterFlags{nodes: "a:1,n2=b:1,n3=c:1", node: "n2"}, "want name=host:port"},
		{clusterFlags{nodes: "n 1=a:1,n2=b:1,n3=c:1", node: "n2"}, "node name"},
	} {
		_, err := c.f.parse()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.f, err, c.want)
		}
	}
}
