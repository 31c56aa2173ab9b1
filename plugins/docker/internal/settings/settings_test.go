package settings

import (
	"strings"
	"testing"
)

func TestDefaults(t *testing.T) {
	for _, in := range []string{"", "null", "{}"} {
		s, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if s.MemoryBytes != 4<<30 || s.PidsLimit != 512 || s.NanoCPUs != 0 {
			t.Errorf("Parse(%q) = %+v, want 4 GiB, 512 pids, no cpu limit", in, s)
		}
		if s.SubnetPool.String() != "198.18.0.0/15" || len(s.EgressNetworks) != 0 || !s.KeepEgressProxy {
			t.Errorf("Parse(%q) = %+v, want the default subnet pool, no extra networks and the proxy kept", in, s)
		}
	}
}

func TestValues(t *testing.T) {
	s, err := Parse([]byte(`{"memory":"512m","pids_limit":64,"cpus":1.5,"labels":{"dev.bot-bottle.test":"x","team":"a"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.MemoryBytes != 512<<20 || s.PidsLimit != 64 || s.NanoCPUs != 1_500_000_000 {
		t.Errorf("got %+v", s)
	}
	if s.Labels["dev.bot-bottle.test"] != "x" || s.Labels["team"] != "a" {
		t.Errorf("labels = %v", s.Labels)
	}
	s, err = Parse([]byte(`{"subnet_pool":"10.99.1.7/20","egress_networks":["svc_net","svc_net","a.b-c"],"keep_egress_proxy":false}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.SubnetPool.String() != "10.99.0.0/20" || strings.Join(s.EgressNetworks, ",") != "svc_net,a.b-c" || s.KeepEgressProxy {
		t.Errorf("subnet pool %s, egress networks %v, keep proxy %v", s.SubnetPool, s.EgressNetworks, s.KeepEgressProxy)
	}
}

func TestErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"memory":"lots"}`:  `memory "lots"`,
		`{"memory":"1k"}`:    "minimum",
		`{"pids_limit":0}`:   "pids_limit",
		`{"pids_limit":1.5}`: "pids_limit",
		`{"cpus":-1}`:        "cpus",
		`{"memroy":"4g"}`:    "memroy",
		`{"labels":{"dev.bot-bottle.identity":"other"}}`: "reserved",
		`{"memory":4}`:                  "memory",
		`[1]`:                           "docker plugin config",
		`{"subnet_pool":"fd00::/64"}`:   "subnet_pool",
		`{"subnet_pool":"10.0.0.0/29"}`: "too small",
		`{"subnet_pool":"lots"}`:        "subnet_pool",
		`{"egress_networks":["-x"]}`:    "egress_networks",
		`{"egress_networks":["a b"]}`:   "egress_networks",
		`{"keep_egress_proxy":"yes"}`:   "keep_egress_proxy",
	} {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) error = %v, want it to mention %q", in, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%s) error spans lines: %q", in, err)
		}
	}
}
