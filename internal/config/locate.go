package config

import (
	"fmt"
	"regexp"
)

// configKeyRE finds the config key a plugin's error is about. Plugins say
// "… config: KEY …" (see sdk/doc.go); the key is the first word after it.
// An unknown key is named the way encoding/json does.
var configKeyRE = regexp.MustCompile(`config: ([A-Za-z_][A-Za-z0-9_-]*)|unknown field "([A-Za-z_][A-Za-z0-9_-]*)"`)

// Locate puts the file:line of the config attribute a plugin's error is
// about in front of it, so that a value the plugin refused is as easy to
// find as one HCL refused. An error about no key of this block is returned
// as it is.
func (b PluginBlock) Locate(err error) error {
	if err == nil || len(b.ConfigKeys) == 0 {
		return err
	}
	for _, m := range configKeyRE.FindAllStringSubmatch(err.Error(), -1) {
		if r, ok := b.ConfigKeys[m[1]+m[2]]; ok {
			return &locatedError{where: fmt.Sprintf("%s:%d", r.Filename, r.Start.Line), err: err}
		}
	}
	return err
}

type locatedError struct {
	where string
	err   error
}

func (e *locatedError) Error() string { return e.where + ": " + e.err.Error() }
func (e *locatedError) Unwrap() error { return e.err }
