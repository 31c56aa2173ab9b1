package audit

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// commonOCSF are the fields every exported record has, per the mapping in
// ocsf.go, with a check of each value's type.
var commonOCSF = map[string]string{
	"class_uid": "number", "class_name": "string", "category_uid": "number", "category_name": "string",
	"activity_id": "number", "activity_name": "string", "type_uid": "number", "type_name": "string",
	"time": "number", "severity_id": "number", "severity": "string", "status_id": "number", "status": "string",
	"message": "string", "metadata": "object", "src_endpoint": "object", "raw_data": "string", "unmapped": "object",
}

// classOCSF are the fields each class adds.
var classOCSF = map[int][]string{
	ClassNetworkActivity:      {"dst_endpoint", "action_id", "action", "disposition_id", "disposition"},
	ClassHTTPActivity:         {"dst_endpoint", "action_id", "action", "disposition_id", "disposition", "http_request"},
	ClassAPIActivity:          {"actor", "api"},
	ClassApplicationLifecycle: {"app"},
}

func jsonType(v any) string {
	switch v.(type) {
	case float64:
		return "number"
	case string:
		return "string"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case bool:
		return "bool"
	}
	return fmt.Sprintf("%T", v)
}

// TestOCSFMapping pins the documented mapping: a session with a start, a
// request, a decision of each kind, a stop and egress attempts (a tunnel
// allowed with the dialed address, one refused, a plain-HTTP GET, a
// request too malformed to name a host) maps to the documented classes,
// activities and fields, each line valid JSON.
func TestOCSFMapping(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	id := "shell-aaaaa"
	evs := []Event{
		{Time: at(0), Identity: id, Kind: KindStart, Actor: "user:op", Fields: map[string]any{"agent": "shell", "backend": "docker"}},
		{Time: at(2), Identity: id, Kind: KindRequest, Actor: "bottle:" + id, RequestID: id + "-r00001",
			Fields: map[string]any{"kind": "egress", "host": "docs.test:443", "reason": "read docs", "summary": "docs.test:443"}},
		{Time: at(3), Identity: id, Kind: KindDecision, Actor: "user:op", RequestID: id + "-r00001",
			Fields: map[string]any{"decision": "approved", "host": "docs.test:443"}},
		{Time: at(5), Identity: id, Kind: KindDecision, Actor: "policy:p.hcl#no", RequestID: id + "-r00002",
			Fields: map[string]any{"decision": "denied", "reason": "no piping"}},
		{Time: at(9), Identity: id, Kind: KindStop, Fields: map[string]any{"exit_code": 0}},
	}
	egress := []sdk.EgressEvent{
		{Time: at(4).Format(time.RFC3339Nano), Identity: id, Host: "docs.test", Port: 443, Allowed: true, Rule: "docs.test:443", Method: "CONNECT", Addr: "192.0.2.7:443"},
		{Time: at(6).Format(time.RFC3339Nano), Identity: id, Host: "evil.test", Port: 443, Reason: "not in the allowlist", Method: "CONNECT"},
		{Time: at(7).Format(time.RFC3339Nano), Identity: id, Host: "docs.test", Port: 80, Allowed: true, Rule: "docs.test", Method: "GET", Addr: "192.0.2.7:80"},
		{Time: at(8).Format(time.RFC3339Nano), Identity: id, Reason: "rejected by the HTTP server: 400 Bad Request"},
	}
	recs, err := OCSF(evs, egress, "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		class, activity, status int
		checks                  map[string]any // dotted path → value
	}
	wants := []want{
		{ClassApplicationLifecycle, 3, 1, map[string]any{"app.name": "shell", "app.uid": id, "actor.user.name": "user:op"}},
		{ClassAPIActivity, 1, 1, map[string]any{"api.operation": "request.egress", "actor.user.name": "bottle:" + id,
			"status_detail": "read docs", "api.service.name": "bot-bottle queue"}},
		{ClassAPIActivity, 3, 1, map[string]any{"api.operation": "decision.approved", "actor.user.name": "user:op"}},
		{ClassNetworkActivity, 1, 1, map[string]any{"dst_endpoint.hostname": "docs.test", "dst_endpoint.ip": "192.0.2.7",
			"dst_endpoint.port": 443.0, "action_id": 1.0, "disposition": "Allowed", "unmapped.rule": "docs.test:443"}},
		{ClassAPIActivity, 3, 2, map[string]any{"api.operation": "decision.denied", "status_detail": "no piping",
			"actor.user.name": "policy:p.hcl#no"}},
		{ClassNetworkActivity, 5, 2, map[string]any{"dst_endpoint.hostname": "evil.test", "action_id": 2.0,
			"disposition_id": 2.0, "status_detail": "not in the allowlist"}},
		{ClassHTTPActivity, 3, 1, map[string]any{"http_request.http_method": "GET", "http_request.url.hostname": "docs.test",
			"dst_endpoint.ip": "192.0.2.7"}},
		{ClassNetworkActivity, 5, 2, map[string]any{"status_detail": "rejected by the HTTP server: 400 Bad Request"}},
		{ClassApplicationLifecycle, 4, 1, map[string]any{"app.uid": id}},
	}
	if len(recs) != len(wants) {
		t.Fatalf("%d records, want %d", len(recs), len(wants))
	}
	for i, w := range wants {
		line, err := json.Marshal(recs[i].Record)
		if err != nil {
			t.Fatal(err)
		}
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		for k, typ := range commonOCSF {
			if got := jsonType(r[k]); got != typ {
				t.Errorf("record %d: %s is %s, want %s: %s", i, k, got, typ, line)
			}
		}
		for _, k := range classOCSF[w.class] {
			if _, ok := r[k]; !ok {
				t.Errorf("record %d (class %d): no %s: %s", i, w.class, k, line)
			}
		}
		checks := map[string]any{
			"class_uid": float64(w.class), "activity_id": float64(w.activity), "status_id": float64(w.status),
			"type_uid": float64(w.class*100 + w.activity), "category_uid": float64(w.class / 1000),
			"metadata.version": "1.3.0", "metadata.product.name": "bot-bottle", "metadata.product.version": "v1.2.3",
			"src_endpoint.uid": id, "severity_id": 1.0, "time": float64(recs[i].Time.UnixMilli()),
		}
		for k, v := range w.checks {
			checks[k] = v
		}
		for path, v := range checks {
			if got := lookup(r, path); got != v {
				t.Errorf("record %d: %s = %v, want %v: %s", i, path, got, v, line)
			}
		}
		// raw_data is the source line whole.
		var src map[string]any
		if err := json.Unmarshal([]byte(r["raw_data"].(string)), &src); err != nil || src["identity"] != id {
			t.Errorf("record %d: raw_data is not the source record: %v %v", i, src, err)
		}
	}
	if names := classNames[ClassAPIActivity] + "/" + classNames[ClassNetworkActivity] + "/" + classNames[ClassHTTPActivity]; names != "API Activity/Network Activity/HTTP Activity" {
		t.Errorf("class names: %s", names)
	}
}

func lookup(m map[string]any, path string) any {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[part]
	}
	return cur
}
