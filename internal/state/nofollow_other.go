//go:build !unix

package state

const oNoFollow = 0
