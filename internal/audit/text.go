package audit

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// blockFields are the multi-line fields Text shows under their record,
// indented, instead of escaped on the record's line.
var blockFields = []string{"dockerfile", "dockerfile_diff"}

// BlockIndent starts every line Text writes under a record, so that no
// line of a value can start like a record (records start with their time).
const BlockIndent = "    "

// Text renders ev for a terminal: one line for the record — time, kind,
// actor, request id, then key=value for each field in key order — and,
// indented under it, the lines of its multi-line fields. Every value goes
// through sdk/render, and a value that is not a plain token is
// quoted, so whatever a field holds it cannot end the record's line, start
// a line that reads as another record, or pass for another key=value.
func Text(ev Event) []string {
	line := fmt.Sprintf("%s  %-9s %s", ev.Time.Format(time.RFC3339), render.Text(ev.Kind), render.Text(ev.Actor))
	if ev.RequestID != "" {
		line += "  " + render.Text(ev.RequestID)
	}
	keys := make([]string, 0, len(ev.Fields))
	for k := range ev.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var block []string
	for _, k := range keys {
		v := ev.Fields[k]
		if s, ok := v.(string); ok && isBlockField(k) {
			if s != "" {
				block = append(block, BlockIndent+render.Text(k)+":")
				for _, l := range render.Lines(s) {
					block = append(block, BlockIndent+"  "+l)
				}
			}
			continue
		}
		line += "  " + token(k) + "=" + Value(v)
	}
	return append([]string{line}, block...)
}

func isBlockField(k string) bool {
	for _, b := range blockFields {
		if k == b {
			return true
		}
	}
	return false
}

// Value renders one field value on one line: a plain token as it is, any
// other string quoted and escaped, anything else as its JSON.
func Value(v any) string {
	switch v := v.(type) {
	case string:
		return token(v)
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // "a > b" reads as itself
	if err := enc.Encode(v); err != nil {
		return render.Quoted(fmt.Sprint(v))
	}
	return render.Text(strings.TrimSuffix(b.String(), "\n"))
}

// token is s bare when it is a non-empty run of characters that cannot be
// mistaken for a separator or a quote, and quoted otherwise.
func token(s string) string {
	if s == "" {
		return `""`
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._:/@#+,-~%*", c)) {
			return render.Quoted(s)
		}
	}
	return s
}

// EgressHeader names the columns of EgressRow.
var EgressHeader = []string{"TIME", "HOST", "PORT", "DECISION", "RULE", "REASON", "DIALED", "METHOD", "CREDENTIAL", "PATH"}

// EgressRow renders one connection attempt, request or credential event as
// terminal-safe table cells. A credential event's kind (inject,
// exfiltration, revoke) stands in the DECISION column.
func EgressRow(ev sdk.EgressEvent) []string {
	dec := "refused"
	if ev.Allowed {
		dec = "allowed"
	}
	if ev.Kind != "" {
		dec = render.Text(ev.Kind)
	}
	return []string{render.Text(ev.Time), dash(render.Text(ev.Host)), strconv.Itoa(ev.Port), dec, dash(render.Text(ev.Rule)),
		dash(render.Text(ev.Reason)), dash(render.Text(ev.Addr)), dash(render.Text(ev.Method)),
		dash(render.Text(ev.Credential)), dash(render.Text(ev.Path))}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
