package main

import (
	"fmt"
	"strings"

	"github.com/alecthomas/kong"
)

// commandAfterDashes holds the operator to the help's rule that the command
// comes after `--`: kong hands an unknown flag after the agent name to the
// passthrough command, so `start shell --detatch` would otherwise run
// "--detatch" in a new bottle. It is a flag error, with did-you-mean, before
// anything is made.
func commandAfterDashes(kctx *kong.Context, target string, command []string) error {
	if len(command) == 0 || command[0] == "--" || !strings.HasPrefix(command[0], "-") || command[0] == "-" {
		return nil
	}
	word := command[0]
	name, _, _ := strings.Cut(word, "=")
	var names []string
	for _, f := range kctx.Flags() {
		if f.Hidden {
			continue
		}
		names = append(names, "--"+f.Name)
		if f.Short != 0 {
			names = append(names, "-"+string(f.Short))
		}
	}
	msg := fmt.Sprintf("unknown flag %s", name)
	if near := closest(name, names); near != "" && len(name) > 2 {
		msg += fmt.Sprintf(", did you mean %q?", near)
	}
	verb, _, _ := strings.Cut(kctx.Command(), " ")
	return fmt.Errorf("%s (flags go before --, the bottle's command after it: bot-bottle %s %s [flags] -- CMD)", msg, verb, target)
}

// closest is the candidate within two edits of word (or with it as a
// prefix), the nearest first; "" when none is near.
func closest(word string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		d := levenshtein(word, c)
		if strings.HasPrefix(c, word) && len(word) > 2 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur := make([]int, len(rb)+1)
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(rb)]
}
