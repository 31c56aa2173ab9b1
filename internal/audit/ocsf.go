package audit

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// OCSF export. `bot-bottle audit --format ocsf` turns a bottle's audit log
// and its egress log into JSON lines in the Open Cybersecurity Schema
// Framework, version OCSFVersion, for operators who feed a SIEM. The JSONL
// files stay the source: every OCSF record carries its source line whole in
// raw_data, and the fields OCSF has no place for in unmapped.
//
// The mapping (TestOCSFMapping pins it):
//
//	source record                 class_uid (class)              activity_id (activity)
//	egress, method CONNECT or ""  4001 Network Activity          1 Open (allowed), 5 Refuse (refused)
//	egress, any other method      4002 HTTP Activity             1 Connect … 8 Trace by method, 99 Other
//	request                       6003 API Activity              1 Create
//	decision                      6003 API Activity              3 Update
//	start, resume                 6002 Application Lifecycle     3 Start
//	stop, cleanup                 6002 Application Lifecycle     4 Stop
//	commit, preserve, any other   6002 Application Lifecycle     99 Other
//
// Every record has: class_uid, class_name, category_uid (4 Network
// Activity, 6 Application Activity), category_name, activity_id,
// activity_name, type_uid (class_uid*100 + activity_id), type_name, time
// (epoch milliseconds), severity_id 1 and severity "Informational",
// status_id and status (1 Success; 2 Failure for a refused attempt or a
// denied request), message, metadata {version: OCSFVersion, product {name,
// vendor_name: "bot-bottle", version}, log_name: "audit" or "egress"},
// src_endpoint {uid, name: the bottle's identity}, raw_data, and unmapped
// (the source's remaining fields).
//
// Egress records add dst_endpoint {hostname, ip, port} (ip: the address the
// proxy dialed, or the address literal asked for), action_id and action (1
// Allowed, 2 Denied), disposition_id and disposition (1 Allowed, 2
// Blocked), status_detail (the proxy's reason), and for HTTP Activity
// http_request {http_method, url {hostname, port}}; unmapped.rule is the
// allowlist rule.
//
// API Activity records add actor {user {name: the actor, e.g. bottle:<id>,
// user:<name>, policy:<file>#<rule>}}, api {operation:
// "request.<kind>" or "decision.<approved|denied>", service {name:
// "bot-bottle queue"}}, resources [{uid: the request id, type: "request"}]
// and status_detail (the decision's or the refusal's reason).
// Application Lifecycle records add app {name: the agent or "bot-bottle
// bottle", uid: the identity} and actor when the source names one.

// OCSFVersion is the OCSF schema version the export follows.
const OCSFVersion = "1.3.0"

// OCSF class and category numbers used by the export.
const (
	ClassNetworkActivity      = 4001
	ClassHTTPActivity         = 4002
	ClassApplicationLifecycle = 6002
	ClassAPIActivity          = 6003
	categoryNetwork           = 4
	categoryApplication       = 6
)

var classNames = map[int]string{
	ClassNetworkActivity:      "Network Activity",
	ClassHTTPActivity:         "HTTP Activity",
	ClassApplicationLifecycle: "Application Lifecycle",
	ClassAPIActivity:          "API Activity",
}

var categoryNames = map[int]string{categoryNetwork: "Network Activity", categoryApplication: "Application Activity"}

var httpActivities = map[string]int{"CONNECT": 1, "DELETE": 2, "GET": 3, "HEAD": 4, "OPTIONS": 5, "POST": 6, "PUT": 7, "TRACE": 8}

var activityNames = map[int]map[int]string{
	ClassNetworkActivity:      {1: "Open", 5: "Refuse", 99: "Other"},
	ClassHTTPActivity:         {1: "Connect", 2: "Delete", 3: "Get", 4: "Head", 5: "Options", 6: "Post", 7: "Put", 8: "Trace", 99: "Other"},
	ClassApplicationLifecycle: {3: "Start", 4: "Stop", 99: "Other"},
	ClassAPIActivity:          {1: "Create", 3: "Update", 99: "Other"},
}

// OCSFRecord is one exported record and the time it sorts by.
type OCSFRecord struct {
	Time   time.Time
	Record map[string]any
}

// OCSF maps a bottle's audit events and egress events to OCSF records,
// oldest first. product is bot-bottle's version, for metadata.product.
func OCSF(evs []Event, egress []sdk.EgressEvent, product string) ([]OCSFRecord, error) {
	var out []OCSFRecord
	for _, ev := range evs {
		r, err := ocsfAudit(ev, product)
		if err != nil {
			return nil, err
		}
		out = append(out, OCSFRecord{Time: ev.Time, Record: r})
	}
	for _, ev := range egress {
		t, _ := time.Parse(time.RFC3339Nano, ev.Time)
		r, err := ocsfEgress(ev, t, product)
		if err != nil {
			return nil, err
		}
		out = append(out, OCSFRecord{Time: t, Record: r})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out, nil
}

func ocsfBase(class, activity int, t time.Time, identity, logName string, raw any, product string) (map[string]any, error) {
	src, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("ocsf: encode source record: %w", err)
	}
	cat := class / 1000
	an := activityNames[class][activity]
	return map[string]any{
		"class_uid":     class,
		"class_name":    classNames[class],
		"category_uid":  cat,
		"category_name": categoryNames[cat],
		"activity_id":   activity,
		"activity_name": an,
		"type_uid":      class*100 + activity,
		"type_name":     classNames[class] + ": " + an,
		"time":          t.UnixMilli(),
		"severity_id":   1,
		"severity":      "Informational",
		"status_id":     1,
		"status":        "Success",
		"metadata": map[string]any{
			"version":  OCSFVersion,
			"log_name": logName,
			"product":  map[string]any{"name": "bot-bottle", "vendor_name": "bot-bottle", "version": product},
		},
		"src_endpoint": map[string]any{"uid": identity, "name": identity},
		"raw_data":     string(src),
	}, nil
}

func failed(r map[string]any) {
	r["status_id"], r["status"] = 2, "Failure"
}

func ocsfEgress(ev sdk.EgressEvent, t time.Time, product string) (map[string]any, error) {
	class, activity := ClassNetworkActivity, 1
	method := strings.ToUpper(ev.Method)
	if method != "" && method != "CONNECT" {
		class, activity = ClassHTTPActivity, 99
		if a, ok := httpActivities[method]; ok {
			activity = a
		}
	} else if !ev.Allowed {
		activity = 5
	}
	r, err := ocsfBase(class, activity, t, ev.Identity, "egress", ev, product)
	if err != nil {
		return nil, err
	}
	dst := map[string]any{}
	if ev.Host != "" {
		dst["hostname"] = ev.Host
	}
	if ev.Port != 0 {
		dst["port"] = ev.Port
	}
	if ip := dialedIP(ev); ip != "" {
		dst["ip"] = ip
	}
	r["dst_endpoint"] = dst
	if ev.Allowed {
		r["action_id"], r["action"] = 1, "Allowed"
		r["disposition_id"], r["disposition"] = 1, "Allowed"
	} else {
		r["action_id"], r["action"] = 2, "Denied"
		r["disposition_id"], r["disposition"] = 2, "Blocked"
		failed(r)
	}
	if ev.Reason != "" {
		r["status_detail"] = ev.Reason
	}
	if class == ClassHTTPActivity {
		r["http_request"] = map[string]any{"http_method": method, "url": map[string]any{"hostname": ev.Host, "port": ev.Port}}
	}
	verb := "refused"
	if ev.Allowed {
		verb = "allowed"
	}
	r["message"] = fmt.Sprintf("egress %s %s:%d %s", ev.Method, ev.Host, ev.Port, verb)
	unmapped := map[string]any{"rule": ev.Rule, "method": ev.Method, "addr": ev.Addr}
	if ev.Kind != "" {
		// A credential event (inject, exfiltration, revoke): named, never
		// a value.
		r["message"] = fmt.Sprintf("egress %s of credential %s, %s:%d", ev.Kind, ev.Credential, ev.Host, ev.Port)
		unmapped["kind"], unmapped["credential"] = ev.Kind, ev.Credential
	}
	if ev.Path != "" {
		unmapped["path"] = ev.Path
	}
	r["unmapped"] = unmapped
	return r, nil
}

// dialedIP is the IP the proxy dialed, or the host when it is an address.
func dialedIP(ev sdk.EgressEvent) string {
	if ev.Addr != "" {
		if i := strings.LastIndexByte(ev.Addr, ':'); i > 0 {
			return strings.Trim(ev.Addr[:i], "[]")
		}
		return ev.Addr
	}
	if ev.Host != "" && strings.Trim(ev.Host, "0123456789.:abcdefABCDEF[]") == "" && strings.ContainsAny(ev.Host, ".:") {
		return strings.Trim(ev.Host, "[]")
	}
	return ""
}

func ocsfAudit(ev Event, product string) (map[string]any, error) {
	var class, activity int
	switch ev.Kind {
	case KindRequest:
		class, activity = ClassAPIActivity, 1
	case KindDecision:
		class, activity = ClassAPIActivity, 3
	case KindStart, KindResume:
		class, activity = ClassApplicationLifecycle, 3
	case KindStop, KindCleanup:
		class, activity = ClassApplicationLifecycle, 4
	default:
		class, activity = ClassApplicationLifecycle, 99
	}
	r, err := ocsfBase(class, activity, ev.Time, ev.Identity, "audit", ev, product)
	if err != nil {
		return nil, err
	}
	field := func(k string) string { s, _ := ev.Fields[k].(string); return s }
	unmapped := map[string]any{"kind": ev.Kind}
	for k, v := range ev.Fields {
		unmapped[k] = v
	}
	r["unmapped"] = unmapped
	if ev.Actor != "" {
		r["actor"] = map[string]any{"user": map[string]any{"name": ev.Actor}}
	}
	if class == ClassApplicationLifecycle {
		name := field("agent")
		if name == "" {
			name = "bot-bottle bottle"
		}
		r["app"] = map[string]any{"name": name, "uid": ev.Identity}
		r["message"] = fmt.Sprintf("bottle %s: %s", ev.Identity, ev.Kind)
		return r, nil
	}
	if _, ok := r["actor"]; !ok {
		r["actor"] = map[string]any{"user": map[string]any{"name": "bottle:" + ev.Identity}}
	}
	op := "request." + field("kind")
	if field("kind") == "" {
		op = "request"
	}
	detail := field("reason")
	if ev.Kind == KindDecision {
		op = "decision." + field("decision")
		if field("decision") == "denied" {
			failed(r)
		}
	}
	if refused := field("refused"); refused != "" {
		failed(r)
		detail = refused
	}
	if detail != "" {
		r["status_detail"] = detail
	}
	r["api"] = map[string]any{"operation": op, "service": map[string]any{"name": "bot-bottle queue"}}
	if ev.RequestID != "" {
		r["resources"] = []any{map[string]any{"uid": ev.RequestID, "type": "request"}}
	}
	r["message"] = fmt.Sprintf("%s %s %s", ev.Kind, ev.RequestID, field("summary"))
	return r, nil
}
