package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// uploadState is what an interrupted upload leaves behind so that running the same
// command again resumes it: the client token (which names the same pending snapshot)
// and which blocks the service acknowledged. It is a small file under the user's cache
// directory, keyed by the image and the upload's parameters.
type uploadState struct {
	path string

	mu         sync.Mutex
	Token      string `json:"token"`
	SnapshotID string `json:"snapshotId,omitempty"`
	Blocks     int64  `json:"blocks"`
	Acked      []byte `json:"acked"` // bitmap of acknowledged block indices
}

func stateKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// loadUploadState returns the state for key, or a fresh one with a new client token.
func loadUploadState(dir, key string, blocks int64) (*uploadState, error) {
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir = filepath.Join(cache, "ebsctl", "uploads")
	}
	st := &uploadState{path: filepath.Join(dir, key+".json")}
	raw, err := os.ReadFile(st.path)
	if err == nil && json.Unmarshal(raw, st) == nil && st.Blocks == blocks && len(st.Acked) == int((blocks+7)/8) {
		return st, nil
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	st.Token = "ebsctl-" + hex.EncodeToString(tok[:])
	st.SnapshotID = ""
	st.Blocks = blocks
	st.Acked = make([]byte, (blocks+7)/8)
	return st, nil
}

func (s *uploadState) acked(i int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Acked[i/8]&(1<<(i%8)) != 0
}

func (s *uploadState) markAcked(i int64) {
	s.mu.Lock()
	s.Acked[i/8] |= 1 << (i % 8)
	s.mu.Unlock()
}

// save writes the state atomically.
func (s *uploadState) save() error {
	s.mu.Lock()
	raw, err := json.Marshal(s)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("upload state: %w", err)
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("upload state: %w", err)
	}
	return os.Rename(tmp, s.path)
}

func (s *uploadState) remove() { _ = os.Remove(s.path) }

// saveEvery saves the state periodically until the returned stop is called, so that a
// killed upload loses at most that much of its record of acknowledged blocks (those
// blocks are sent again, which is harmless).
func (s *uploadState) saveEvery(d time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = s.save()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
