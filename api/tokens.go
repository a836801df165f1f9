package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"time"

	"github.com/ebsd/ebsd/cas"
)

// Tokens are opaque to clients and tamper-proof: a payload and an HMAC-SHA256 over the
// payload and what the token is bound to (operation, snapshot ids), keyed by a secret
// kept in the store so tokens stay valid across restarts. A block token carries the
// block's digest: completed snapshots never change, so GetSnapshotBlock needs no
// lookup through the lineage.
const (
	tokenVersion = 1
	kindBlock    = 'b'
	kindPage     = 'p'
	macLen       = 16

	blockTokenTTL = 7 * 24 * time.Hour
	pageTokenTTL  = 60 * time.Minute
)

var (
	errTokenMalformed = errors.New("is not a token this service issued")
	errTokenForeign   = errors.New("was not issued for this snapshot and block")
	errTokenExpired   = errors.New("has expired")
)

type tokenSigner struct {
	key   []byte
	clock cas.Clock
}

func (t *tokenSigner) mac(payload []byte, bound ...string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write(payload)
	for _, b := range bound {
		m.Write([]byte{0})
		m.Write([]byte(b))
	}
	return m.Sum(nil)[:macLen]
}

func (t *tokenSigner) seal(kind byte, ttl time.Duration, body []byte, bound ...string) (string, time.Time) {
	expiry := t.clock.Now().Add(ttl).Truncate(time.Second)
	p := []byte{tokenVersion, kind}
	p = binary.BigEndian.AppendUint64(p, uint64(expiry.Unix()))
	p = append(p, body...)
	return base64.StdEncoding.EncodeToString(append(p, t.mac(p, bound...)...)), expiry
}

// open checks a token of the given kind and body length (-1: any) and returns its body.
func (t *tokenSigner) open(tok string, kind byte, bodyLen int, bound ...string) ([]byte, error) {
	raw, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || len(raw) < 2+8+macLen || raw[0] != tokenVersion || raw[1] != kind ||
		(bodyLen >= 0 && len(raw) != 2+8+bodyLen+macLen) {
		return nil, errTokenMalformed
	}
	p, mac := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(mac, t.mac(p, bound...)) {
		return nil, errTokenForeign
	}
	if expiry := time.Unix(int64(binary.BigEndian.Uint64(p[2:10])), 0); !t.clock.Now().Before(expiry) {
		return nil, errTokenExpired
	}
	return p[10:], nil
}

func (t *tokenSigner) blockToken(snap string, index int64, d cas.Digest) (string, time.Time) {
	body := binary.BigEndian.AppendUint64(nil, uint64(index))
	return t.seal(kindBlock, blockTokenTTL, append(body, d[:]...), "block", snap)
}

// openBlockToken returns the digest a block token grants for snapshot snap at index.
func (t *tokenSigner) openBlockToken(tok, snap string, index int64) (cas.Digest, error) {
	var d cas.Digest
	body, err := t.open(tok, kindBlock, 8+len(d), "block", snap)
	if err != nil {
		return d, err
	}
	if int64(binary.BigEndian.Uint64(body)) != index {
		return d, errTokenForeign
	}
	copy(d[:], body[8:])
	return d, nil
}

// pageToken encodes where the next page of a listing starts.
func (t *tokenSigner) pageToken(op, snap, first string, next int64) string {
	tok, _ := t.seal(kindPage, pageTokenTTL, binary.BigEndian.AppendUint64(nil, uint64(next)), op, snap, first)
	return tok
}

func (t *tokenSigner) openPageToken(tok, op, snap, first string) (int64, error) {
	body, err := t.open(tok, kindPage, 8, op, snap, first)
	if err != nil {
		return 0, err
	}
	return int64(binary.BigEndian.Uint64(body)), nil
}

// describeToken encodes the snapshot id a DescribeSnapshots page continues after.
func (t *tokenSigner) describeToken(owner, after string) string {
	tok, _ := t.seal(kindPage, pageTokenTTL, []byte(after), "ec2-describe", owner)
	return tok
}

func (t *tokenSigner) openDescribeToken(tok, owner string) (string, error) {
	body, err := t.open(tok, kindPage, -1, "ec2-describe", owner)
	return string(body), err
}
