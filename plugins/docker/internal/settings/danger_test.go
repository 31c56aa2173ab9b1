package settings

import (
	"strings"
	"testing"
)

func TestBadValuesAreOneLineErrors(t *testing.T) {
	for in, want := range map[string]string{
		`{"subnet_pool":"0.0.0.0/0"}`:         "too large",
		`{"subnet_pool":"8.8.0.0/16"}`:        "outside the private",
		`{"subnet_pool":"172.32.0.0/16"}`:     "outside the private",
		`{"subnet_pool":"192.168.0.0/15"}`:    "outside the private",
		`{"pids_limit":1}`:                    "minimum of 32",
		`{"memory":"32m"}`:                    "minimum of 64MiB",
		`{"egress_networks":["host"]}`:        `"host" is refused`,
		`{"egress_networks":["none"]}`:        `"none" is refused`,
		`{"egress_networks":["ok","bridge"]}`: `"bridge" is refused`,
		`{"allow_dangerous_caps":["CHOWN"]}`:  "not one of the dangerous",
		`{"runtime":"run sc"}`:                "runtime",
		`{"runtime":""}`:                      "runtime",
	} {
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) error = %v, want it to mention %q", in, err, want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%s) error spans lines: %q", in, err)
		}
	}
}

func TestGoodRangesAndRuntime(t *testing.T) {
	for _, pool := range []string{"10.0.0.0/8", "172.20.0.0/16", "192.168.8.0/24", "100.64.0.0/10", "198.18.0.0/15", "10.1.2.0/28"} {
		if _, err := Parse([]byte(`{"subnet_pool":"` + pool + `"}`)); err != nil {
			t.Errorf("subnet_pool %s: %v", pool, err)
		}
	}
	s, err := Parse([]byte(`{"runtime":"runsc","allow_dangerous_caps":["cap_sys_admin","SYS_ADMIN"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Runtime != "runsc" || strings.Join(s.AllowDangerousCaps, ",") != "SYS_ADMIN" {
		t.Errorf("got runtime %q, allowed %v", s.Runtime, s.AllowDangerousCaps)
	}
}

func TestDangerousCapsNeedTheOptIn(t *testing.T) {
	for _, c := range []string{"SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "DAC_READ_SEARCH", "DAC_OVERRIDE", "NET_ADMIN", "NET_RAW", "SYS_BOOT", "BPF", "PERFMON", "MKNOD"} {
		var none Settings
		_, err := none.DangerousAllowed([]string{"CHOWN", c})
		if err == nil || !strings.Contains(err.Error(), c) || !strings.Contains(err.Error(), OptIn+` = ["`+c+`"]`) {
			t.Errorf("%s without the opt-in: %v, want a refusal naming it and %s", c, err, OptIn)
		}
		s, err := Parse([]byte(`{"allow_dangerous_caps":["` + c + `"]}`))
		if err != nil {
			t.Fatal(err)
		}
		weak, err := s.DangerousAllowed([]string{"CHOWN", c})
		if err != nil || len(weak) != 1 || weak[0] != c {
			t.Errorf("%s with the opt-in: weak %v, err %v", c, weak, err)
		}
	}
	var none Settings
	if weak, err := none.DangerousAllowed([]string{"CHOWN", "KILL"}); err != nil || len(weak) != 0 {
		t.Errorf("harmless caps: weak %v, err %v", weak, err)
	}
}
