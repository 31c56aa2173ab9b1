package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"
)

// cmdJSONShape prints the shape of the JSON (one value, or JSON lines) in
// the last command's stdout: one "path type" line per field, sorted, with
// [] for a list's elements, so that a script pins every name and says null
// where a list is expected.
func cmdJSONShape(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: jsonshape")
	}
	seen := map[string]bool{}
	dec := json.NewDecoder(bytes.NewReader([]byte(ts.ReadFile("stdout"))))
	for {
		var v any
		err := dec.Decode(&v)
		if err == io.EOF {
			break
		}
		ts.Check(err)
		shape("$", v, seen)
	}
	var lines []string
	for l := range seen {
		lines = append(lines, l)
	}
	sort.Strings(lines)
	fmt.Fprint(ts.Stdout(), strings.Join(lines, "\n")+"\n")
}

func shape(path string, v any, seen map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		seen[path+" object"] = true
		for k, e := range x {
			shape(path+"."+k, e, seen)
		}
	case []any:
		seen[path+" list"] = true
		for _, e := range x {
			shape(path+"[]", e, seen)
		}
	case string:
		seen[path+" string"] = true
	case float64:
		seen[path+" number"] = true
	case bool:
		seen[path+" bool"] = true
	case nil:
		seen[path+" null"] = true
	}
}
