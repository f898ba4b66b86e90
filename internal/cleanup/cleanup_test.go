package cleanup

import (
	"errors"
	"reflect"
	"testing"
)

func TestUnwindOrderAndErrors(t *testing.T) {
	var s Stack
	var got []string
	s.Push("a", func() error { got = append(got, "a"); return nil })
	s.Push("b", func() error { got = append(got, "b"); return errors.New("boom") })
	s.Push("c", func() error { got = append(got, "c"); return nil })
	err := s.Unwind()
	if !reflect.DeepEqual(got, []string{"c", "b", "a"}) {
		t.Fatalf("order %v", got)
	}
	if err == nil || err.Error() != "cleanup b: boom" {
		t.Fatalf("err %v", err)
	}
	if err := s.Unwind(); err != nil || len(got) != 3 {
		t.Fatalf("second unwind ran actions again: %v %v", got, err)
	}
}
