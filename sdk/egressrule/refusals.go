package egressrule

import "strings"

// A bottle cannot read its proxy's event log (it is on the host), yet the
// agent is the one that must ask for a host it was refused. So a proxy keeps
// a short list of each bottle's recent refusals and answers a plain GET of
// RefusalsPath, sent to the proxy itself (origin-form, not a proxied URL),
// with that bottle's list as Refusals JSON. These types are the one shape of
// that answer, for the proxy that writes it and the helper that reads it.

// RefusalsPath is the path a bottle GETs from its proxy (the address in
// HTTPS_PROXY) to read its recent refusals; `bottle egress` does.
const RefusalsPath = "/.bot-bottle/refusals"

// Refusal is one host a bottle was recently refused.
type Refusal struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	// Time is the last refusal, FirstTime the first one kept (RFC 3339).
	Time      string `json:"time"`
	FirstTime string `json:"first_time"`
	Count     int    `json:"count"`
	Method    string `json:"method,omitempty"`
	// Path is the request's path, for a request refused by a rule about
	// requests (bounded, rendered safely).
	Path   string `json:"path,omitempty"`
	Status int    `json:"status"`
	// Reason is the short reason of the audit event; Message the line the
	// client was answered with.
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// Ask is the line that asks the operator for this host (or request),
	// where asking can help (a host that is not in the allowlist, a
	// request no rule allows).
	Ask string `json:"ask,omitempty"`
}

// Refusals is the answer to a GET of RefusalsPath.
type Refusals struct {
	Identity string    `json:"identity"`
	Refusals []Refusal `json:"refusals"` // oldest first; never null
}

// AskCommand is the in-bottle command that asks for rule, as a refusal
// suggests it: `bottle request egress RULE`, with RULE in single quotes
// when sh would otherwise split it or expand it (a rule about requests has
// a space; a wildcard, '!' and an IPv6 address's brackets are special to
// the shell). A caller adds the --reason part. The one place the ask's
// shape is written, so that every line a proxy suggests runs as it is.
func AskCommand(rule string) string {
	if rule != "" && strings.Trim(rule, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-_/") == "" {
		return "bottle request egress " + rule
	}
	return "bottle request egress '" + strings.ReplaceAll(rule, "'", `'\''`) + "'"
}
