// Package egresslog is the egress audit's record: the JSON line a backend's
// egress proxy appends to a bottle's Spec.EgressLog for every connection
// attempt, request it reads and credential event. It is a package of its
// own, with no dependencies, so that a proxy built into a small in-pod or
// in-bottle helper links it without the plugin machinery (gRPC) of package
// sdk, which re-exports it as sdk.EgressEvent.
package egresslog

// Event is one connection attempt from a bottle, as a backend reports it
// (one JSON object per line), or one of the events of a proxy that puts
// credentials on the wire (Kind, Credential and Path were added for those
// after v1; they are additive and empty on every event an older backend
// writes).
type Event struct {
	Time     string `json:"time"` // RFC 3339
	Identity string `json:"identity"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Allowed  bool   `json:"allowed"`
	// Rule is the allowlist rule that allowed it, or why it was refused.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
	Method string `json:"method,omitempty"` // CONNECT, GET, …
	// Addr is the address the proxy dialed (ip:port) for an allowed
	// name, so that a name that resolves elsewhere than last time shows.
	Addr string `json:"addr,omitempty"`
	// Kind says what the event is: "" a connection attempt (or, with
	// Path, one request the proxy read on a connection it terminates),
	// KindInject a credential put on the wire, KindExfiltration a
	// credential's placeholder seen toward a host it does not belong to,
	// KindRevoke a credential revoked. Added after v1, additively: a
	// reader that ignores it sees the events it always saw.
	Kind string `json:"kind,omitempty"`
	// Credential names the credential of an inject, exfiltration or
	// revoke event. Never its value.
	Credential string `json:"credential,omitempty"`
	// Path is the request's path, for a request the proxy read (plain
	// HTTP, or TLS it terminates): bounded and rendered safely.
	Path string `json:"path,omitempty"`
}

// Values of Event.Kind.
const (
	KindInject       = "inject"
	KindExfiltration = "exfiltration"
	KindRevoke       = "revoke"
)
