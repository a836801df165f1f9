package cas

import (
	"errors"
	"testing"
)

// A second Close (a deferred one after an explicit one, say) reports ErrClosed
// instead of panicking on the already closed stop channel.
func TestCloseTwiceReturnsErrClosed(t *testing.T) {
	s, err := Open(Options{Dir: t.TempDir(), ExpireInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
}
