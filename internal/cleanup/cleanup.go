// Package cleanup is a stack of undo actions. Every resource an install
// takes (a loop device, a mount, a temporary directory) pushes its release
// here, and the stack unwinds in reverse order on success, error or signal.
package cleanup

import (
	"errors"
	"fmt"
	"sync"
)

type action struct {
	name string
	fn   func() error
}

// Stack holds undo actions. The zero value is ready to use.
type Stack struct {
	mu      sync.Mutex
	actions []action
}

// Push registers fn to run at Unwind, before everything pushed earlier.
func (s *Stack) Push(name string, fn func() error) {
	s.mu.Lock()
	s.actions = append(s.actions, action{name, fn})
	s.mu.Unlock()
}

// Unwind runs every action, newest first, once. It keeps going after a
// failure so that one stuck mount does not leak a loop device too, and
// returns all failures joined.
func (s *Stack) Unwind() error {
	s.mu.Lock()
	acts := s.actions
	s.actions = nil
	s.mu.Unlock()
	var errList []error
	for i := len(acts) - 1; i >= 0; i-- {
		if err := acts[i].fn(); err != nil {
			errList = append(errList, fmt.Errorf("cleanup %s: %w", acts[i].name, err))
		}
	}
	return errors.Join(errList...)
}
