package main

import (
	"fmt"
	"strings"
)

// flagSpec is one named flag of a subcommand, as clap declares it.
type flagSpec struct {
	long  string
	short byte // 0 when the flag has no short form
	value bool // takes a value
	multi bool // may be repeated
}

// parsed is a command line split the way clap splits it.
type parsed struct {
	vals     map[string][]string // by long name; booleans hold "true"
	pos      []string
	rest     []string // after "--"
	dashDash bool
}

func (p parsed) has(long string) bool { return len(p.vals[long]) > 0 }

func (p parsed) get(long string) string {
	if v := p.vals[long]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// usageError is a clap argument error: printed as "error: …", exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

// parseFlags parses args strictly: unknown flags, missing values, repeated
// single flags and too many positionals are errors, as with clap. Words
// after "--" go to rest.
func parseFlags(args []string, specs []flagSpec, maxPos int) (parsed, error) {
	return parseArgs(args, specs, maxPos, false)
}

// parseTrailing is parseFlags for a command whose trailing positional is
// clap's trailing_var_arg: the first positional word and everything after
// it, flags included, go to rest, with or without a "--" before them.
func parseTrailing(args []string, specs []flagSpec) (parsed, error) {
	return parseArgs(args, specs, 0, true)
}

// conflicts is clap's conflicts_with: a and b may not both be given.
func (p parsed) conflicts(a, b string) error {
	if p.has(a) && p.has(b) {
		return usagef("the argument '--%s' cannot be used with '--%s'", a, b)
	}
	return nil
}

func parseArgs(args []string, specs []flagSpec, maxPos int, trailing bool) (parsed, error) {
	p := parsed{vals: map[string][]string{}}
	byLong := map[string]flagSpec{}
	byShort := map[byte]flagSpec{}
	for _, s := range specs {
		byLong[s.long] = s
		if s.short != 0 {
			byShort[s.short] = s
		}
	}
	add := func(s flagSpec, v string) error {
		if !s.multi && len(p.vals[s.long]) > 0 {
			return usagef("the argument '--%s' cannot be used multiple times", s.long)
		}
		p.vals[s.long] = append(p.vals[s.long], v)
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			p.dashDash = true
			p.rest = append([]string(nil), args[i+1:]...)
			return p, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			s, ok := byLong[name]
			if !ok {
				return p, usagef("unexpected argument '%s' found", a)
			}
			if !s.value {
				if hasVal {
					return p, usagef("unexpected value '%s' for '--%s' found; no more were expected", val, name)
				}
				if err := add(s, "true"); err != nil {
					return p, err
				}
				continue
			}
			if !hasVal {
				if i+1 >= len(args) || isFlagLike(args[i+1]) {
					return p, usagef("a value is required for '--%s <%s>' but none was supplied", name, strings.ToUpper(name))
				}
				i++
				val = args[i]
			}
			if err := add(s, val); err != nil {
				return p, err
			}
		case strings.HasPrefix(a, "-") && a != "-":
			for j := 1; j < len(a); j++ {
				s, ok := byShort[a[j]]
				if !ok {
					return p, usagef("unexpected argument '-%c' found", a[j])
				}
				if !s.value {
					if err := add(s, "true"); err != nil {
						return p, err
					}
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) || isFlagLike(args[i+1]) {
						return p, usagef("a value is required for '--%s <%s>' but none was supplied", s.long, strings.ToUpper(s.long))
					}
					i++
					val = args[i]
				}
				if err := add(s, val); err != nil {
					return p, err
				}
				break
			}
		default:
			if trailing {
				p.rest = append([]string(nil), args[i:]...)
				return p, nil
			}
			if len(p.pos) >= maxPos {
				return p, usagef("unexpected argument '%s' found", a)
			}
			p.pos = append(p.pos, a)
		}
	}
	return p, nil
}

// isFlagLike is how clap tells a flag from a value: a leading '-', except
// "-" alone (stdin).
func isFlagLike(a string) bool { return strings.HasPrefix(a, "-") && a != "-" }
