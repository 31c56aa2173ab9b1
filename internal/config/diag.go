package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"

	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// HCLError is the error returned for problems found in an HCL file. Error()
// is one line, "file:line:col: summary; detail", naming the first problem and
// how many more there are; Diagnostics holds them all for a caller that wants
// to show every one.
type HCLError struct {
	Diagnostics hcl.Diagnostics
}

func (e *HCLError) Error() string {
	var errs []*hcl.Diagnostic
	for _, d := range e.Diagnostics {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	if len(errs) == 0 {
		return "configuration error"
	}
	msg := formatDiag(errs[0])
	if n := len(errs) - 1; n == 1 {
		msg += " (and 1 more error)"
	} else if n > 1 {
		msg += fmt.Sprintf(" (and %d more errors)", n)
	}
	return msg
}

// formatDiag renders d as "file:line:col: summary; detail" on one line. hcl's
// own Error() writes "file:line,col-col", which editors and users do not read
// as a position.
func formatDiag(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	b.WriteString(oneLine(d.Summary))
	if d.Detail != "" {
		b.WriteString("; ")
		b.WriteString(oneLine(d.Detail))
	}
	return b.String()
}

func oneLine(s string) string { return render.OneLine(s) }

// DiagError turns diags into an error when they hold at least one error. The
// diagnostics are put in file order: hcl reports some of them in map order,
// and the one-line message must name the same first problem every time.
func DiagError(diags hcl.Diagnostics) error {
	if !diags.HasErrors() {
		return nil
	}
	sorted := append(hcl.Diagnostics(nil), diags...)
	sort.SliceStable(sorted, func(i, j int) bool {
		// A missing argument is most often the consequence of a misspelt
		// one ("comand"): name the cause, with hcl's did-you-mean, first.
		if mi, mj := isMissing(sorted[i]), isMissing(sorted[j]); mi != mj {
			return mj
		}
		a, b := sorted[i].Subject, sorted[j].Subject
		switch {
		case a == nil || b == nil:
			return a != nil && b == nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		default:
			return a.Start.Byte < b.Start.Byte
		}
	})
	return &HCLError{Diagnostics: sorted}
}

func isMissing(d *hcl.Diagnostic) bool {
	return strings.HasPrefix(d.Summary, "Missing required argument")
}

// errorAt makes a single diagnostic pointing at rng.
func errorAt(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
}

// decodeExpr decodes a literal expression into target. It evaluates first so
// that a reference or function call is reported as such, alone, rather than
// beside a confusing "value must be known" from the type conversion.
func decodeExpr(expr hcl.Expression, target any) hcl.Diagnostics {
	if _, diags := expr.Value(nil); diags.HasErrors() {
		return diags
	}
	return gohcl.DecodeExpression(expr, nil, target)
}
