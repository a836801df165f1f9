// Package sigv4 authenticates requests signed with AWS Signature Version 4, against
// a keyring of accounts' access keys.
package sigv4

import (
	"fmt"
	"sync/atomic"
)

// Key is one access key and the account it acts for.
type Key struct {
	AccessKeyID     string
	SecretAccessKey string
	AccountID       string
	// Admin keys may use ebsd's own endpoints (GC, stats, digests).
	Admin bool
}

// Keyring holds the access keys the daemon accepts. Replace swaps the whole set at
// once (a reloaded credentials file), so a request sees either the old keys or the
// new ones, never a mixture, and no request waits on a reload.
type Keyring struct {
	keys atomic.Pointer[map[string]Key]
}

// NewKeyring returns a keyring holding keys.
func NewKeyring(keys []Key) (*Keyring, error) {
	k := &Keyring{}
	if err := k.Replace(keys); err != nil {
		return nil, err
	}
	return k, nil
}

// Replace makes keys the accepted set. It refuses, keeping the current set, when an
// access key id appears twice or a key is incomplete.
func (k *Keyring) Replace(keys []Key) error {
	m := make(map[string]Key, len(keys))
	for _, key := range keys {
		if err := ValidKey(key); err != nil {
			return err
		}
		if _, dup := m[key.AccessKeyID]; dup {
			return fmt.Errorf("access key id %s is given twice", key.AccessKeyID)
		}
		m[key.AccessKeyID] = key
	}
	k.keys.Store(&m)
	return nil
}

// Lookup returns the key with that access key id.
func (k *Keyring) Lookup(accessKeyID string) (Key, bool) {
	m := k.keys.Load()
	if m == nil {
		return Key{}, false
	}
	key, ok := (*m)[accessKeyID]
	return key, ok
}

// ValidKey checks the shape of a key: ids as AWS spells them (16–128 word
// characters), a secret of at least 16 characters, a 12-digit account.
func ValidKey(key Key) error {
	if n := len(key.AccessKeyID); n < 16 || n > 128 || !wordChars(key.AccessKeyID) {
		return fmt.Errorf("access key id %q: want 16 to 128 letters, digits or underscores", key.AccessKeyID)
	}
	if len(key.SecretAccessKey) < 16 {
		return fmt.Errorf("the secret access key of %s is shorter than 16 characters", key.AccessKeyID)
	}
	if !ValidAccountID(key.AccountID) {
		return fmt.Errorf("access key %s: account id %q is not 12 digits", key.AccessKeyID, key.AccountID)
	}
	return nil
}

// ValidAccountID says whether id is a 12-digit account id.
func ValidAccountID(id string) bool {
	if len(id) != 12 {
		return false
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func wordChars(s string) bool {
	for _, c := range s {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
