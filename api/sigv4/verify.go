package sigv4

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ebsd/ebsd/api"
)

const (
	algorithm       = "AWS4-HMAC-SHA256"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	amzDateFormat   = "20060102T150405Z"
	// MaxSkew is how far a request's date may be from the server's clock, as on AWS.
	MaxSkew = 15 * time.Minute
	// maxPresignExpiry is the longest X-Amz-Expires SigV4 allows: 7 days.
	maxPresignExpiry = 7 * 24 * 3600
	// maxHashedBody bounds what is read into memory to check a payload hash: a block
	// (512 KiB) and then some; no EBS or EC2 body is larger.
	maxHashedBody = 1 << 20
)

// Verifier authenticates SigV4-signed requests: the Authorization header form and
// the presigned query form. It implements api.Authenticator.
//
// It does not build the canonical request itself. It re-signs a copy of the request
// holding only what the client said it signed, with the client's own date, scope and
// payload hash, using aws-sdk-go-v2's signer (the implementation AWS maintains), and
// compares the two signatures in constant time.
type Verifier struct {
	keys   *Keyring
	now    func() time.Time
	signer *v4.Signer
	// presigner keeps X-Amz-* headers as headers: what a presigned URL hoisted into
	// its query is in the query already.
	presigner *v4.Signer
}

// NewVerifier returns a verifier of signatures made with keys; now is the clock
// (time.Now when nil).
func NewVerifier(keys *Keyring, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	return &Verifier{
		keys:      keys,
		now:       now,
		signer:    v4.NewSigner(),
		presigner: v4.NewSigner(func(o *v4.SignerOptions) { o.DisableHeaderHoisting = true }),
	}
}

// signature is what a request claims: who, when, for what scope, over which headers.
type signature struct {
	accessKeyID   string
	date          time.Time
	scopeDate     string
	region        string
	service       string
	signedHeaders []string
	signature     string
	presigned     bool
	expires       time.Duration // presigned only
}

func fail(kind api.AuthFailure, format string, a ...any) error {
	return &api.AuthError{Kind: kind, Message: fmt.Sprintf(format, a...)}
}

// Authenticate implements api.Authenticator.
func (v *Verifier) Authenticate(r *http.Request, service string) (api.Identity, error) {
	sig, err := parse(r)
	if err != nil {
		return api.Identity{}, err
	}
	if sig.service != service {
		return api.Identity{}, fail(api.AuthBadSignature, "Credential should be scoped to correct service: '%s' (it names '%s')", service, sig.service)
	}
	if err := v.checkTime(sig); err != nil {
		return api.Identity{}, err
	}
	key, ok := v.keys.Lookup(sig.accessKeyID)
	if !ok {
		return api.Identity{}, fail(api.AuthUnknownKey, "no account has the access key id %s", sig.accessKeyID)
	}
	hashes, err := payloadHashes(r, sig.presigned)
	if err != nil {
		return api.Identity{}, err
	}
	for _, h := range hashes {
		got, err := v.resign(r, sig, key, h)
		if err != nil {
			return api.Identity{}, err
		}
		if hmac.Equal([]byte(got), []byte(sig.signature)) {
			return api.Identity{AccountID: key.AccountID, Admin: key.Admin, Region: sig.region, AccessKeyID: key.AccessKeyID}, nil
		}
	}
	return api.Identity{}, fail(api.AuthBadSignature, "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")
}

// parse reads the signature of either form, refusing anything malformed or of
// another algorithm.
func parse(r *http.Request) (signature, error) {
	if auth := r.Header.Get("Authorization"); auth != "" {
		return parseHeader(r, auth)
	}
	q := r.URL.Query()
	if q.Has("X-Amz-Signature") || q.Has("X-Amz-Algorithm") || q.Has("X-Amz-Credential") {
		return parseQuery(q)
	}
	return signature{}, fail(api.AuthMissing, "the request has no Authorization header and no X-Amz-Signature query parameter")
}

func parseHeader(r *http.Request, auth string) (signature, error) {
	alg, rest, _ := strings.Cut(auth, " ")
	if alg != algorithm {
		return signature{}, fail(api.AuthIncomplete, "Authorization header: unsupported algorithm %q; only %s is accepted", truncate(alg), algorithm)
	}
	params := map[string]string{}
	for _, p := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return signature{}, fail(api.AuthIncomplete, "Authorization header: %q is not key=value", truncate(p))
		}
		params[k] = val
	}
	for _, k := range []string{"Credential", "SignedHeaders", "Signature"} {
		if params[k] == "" {
			return signature{}, fail(api.AuthIncomplete, "Authorization header requires a '%s' parameter", k)
		}
	}
	date := r.Header.Get("X-Amz-Date")
	if date == "" {
		return signature{}, fail(api.AuthIncomplete, "the request must carry an X-Amz-Date header")
	}
	return fill(params["Credential"], params["SignedHeaders"], params["Signature"], date, false)
}

func parseQuery(q url.Values) (signature, error) {
	if alg := q.Get("X-Amz-Algorithm"); alg != algorithm {
		return signature{}, fail(api.AuthIncomplete, "X-Amz-Algorithm %q: only %s is accepted", truncate(alg), algorithm)
	}
	for _, k := range []string{"X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Expires"} {
		if q.Get(k) == "" {
			return signature{}, fail(api.AuthIncomplete, "a presigned request needs the query parameter %s", k)
		}
	}
	sig, err := fill(q.Get("X-Amz-Credential"), q.Get("X-Amz-SignedHeaders"), q.Get("X-Amz-Signature"), q.Get("X-Amz-Date"), true)
	if err != nil {
		return sig, err
	}
	exp, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || exp < 1 || exp > maxPresignExpiry {
		return sig, fail(api.AuthIncomplete, "X-Amz-Expires %q must be a number of seconds from 1 to %d", truncate(q.Get("X-Amz-Expires")), maxPresignExpiry)
	}
	sig.expires = time.Duration(exp) * time.Second
	return sig, nil
}

// fill checks and splits the parts both forms share.
func fill(credential, signedHeaders, sigHex, date string, presigned bool) (signature, error) {
	sig := signature{signature: sigHex, presigned: presigned}
	parts := strings.Split(credential, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" || parts[0] == "" || parts[2] == "" || parts[3] == "" {
		return sig, fail(api.AuthIncomplete, "Credential %q is not ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request", truncate(credential))
	}
	sig.accessKeyID, sig.scopeDate, sig.region, sig.service = parts[0], parts[1], parts[2], parts[3]
	t, err := time.Parse(amzDateFormat, date)
	if err != nil {
		return sig, fail(api.AuthIncomplete, "X-Amz-Date %q is not in the form 20060102T150405Z", truncate(date))
	}
	sig.date = t
	if sig.scopeDate != t.Format("20060102") {
		return sig, fail(api.AuthBadSignature, "the credential scope's date %s is not the date of X-Amz-Date %s", sig.scopeDate, date)
	}
	if len(sigHex) != 64 || strings.Trim(sigHex, "0123456789abcdef") != "" {
		return sig, fail(api.AuthIncomplete, "the signature must be 64 lower-case hex digits")
	}
	sig.signedHeaders = strings.Split(signedHeaders, ";")
	hasHost := false
	for i, h := range sig.signedHeaders {
		if h == "" || h != strings.ToLower(h) || (i > 0 && sig.signedHeaders[i-1] >= h) {
			return sig, fail(api.AuthIncomplete, "SignedHeaders %q must be distinct lower-case names in sorted order", truncate(signedHeaders))
		}
		switch h {
		case "host":
			hasHost = true
		case "authorization", "user-agent", "x-amzn-trace-id", "expect", "transfer-encoding":
			// AWS's own signers never sign these; the re-signing signer cannot either.
			return sig, fail(api.AuthIncomplete, "SignedHeaders must not include %s", h)
		}
	}
	if !hasHost {
		return sig, fail(api.AuthIncomplete, "SignedHeaders must include host")
	}
	return sig, nil
}

// checkTime refuses requests more than MaxSkew from the server's clock, and presigned
// ones past their expiry.
func (v *Verifier) checkTime(sig signature) error {
	now := v.now().UTC()
	if sig.date.Sub(now) > MaxSkew {
		return fail(api.AuthExpired, "Signature not yet current: %s is still later than %s (%s + 15 min.)",
			sig.date.Format(amzDateFormat), now.Add(MaxSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	if sig.presigned {
		if end := sig.date.Add(sig.expires); now.After(end) {
			return fail(api.AuthExpired, "the presigned request expired at %s (now %s)", end.Format(amzDateFormat), now.Format(amzDateFormat))
		}
		return nil
	}
	if now.Sub(sig.date) > MaxSkew {
		return fail(api.AuthExpired, "Signature expired: %s is now earlier than %s (%s - 15 min.)",
			sig.date.Format(amzDateFormat), now.Add(-MaxSkew).Format(amzDateFormat), now.Format(amzDateFormat))
	}
	return nil
}

// payloadHashes returns the payload hashes the signature may have been made with.
// X-Amz-Content-Sha256 names it: UNSIGNED-PAYLOAD, or a hex SHA-256 that must be the
// body's. Without the header, SDKs sign the body's hash (and presigned URLs, in some
// SDKs, UNSIGNED-PAYLOAD). Streaming and other forms are refused.
func payloadHashes(r *http.Request, presigned bool) ([]string, error) {
	claimed := r.Header.Get("X-Amz-Content-Sha256")
	if presigned && claimed == "" {
		claimed = r.URL.Query().Get("X-Amz-Content-Sha256")
	}
	switch {
	case claimed == unsignedPayload:
		return []string{unsignedPayload}, nil
	case claimed == "":
		h, err := bodyHash(r)
		if err != nil {
			return nil, err
		}
		if presigned {
			return []string{unsignedPayload, h}, nil
		}
		return []string{h}, nil
	case len(claimed) == 64 && strings.Trim(claimed, "0123456789abcdef") == "":
		h, err := bodyHash(r)
		if err != nil {
			return nil, err
		}
		if h != claimed {
			return nil, fail(api.AuthBadSignature, "the body's SHA-256 %s is not the X-Amz-Content-Sha256 %s the request was signed with", h, claimed)
		}
		return []string{h}, nil
	default:
		return nil, fail(api.AuthIncomplete, "X-Amz-Content-Sha256 %q is not supported: send %s or the lower-case hex SHA-256 of the body", truncate(claimed), unsignedPayload)
	}
}

// bodyHash reads the body (bounded), hashes it and puts the same bytes back.
func bodyHash(r *http.Request) (string, error) {
	if r.Body == nil || r.Body == http.NoBody {
		sum := sha256.Sum256(nil)
		return hex.EncodeToString(sum[:]), nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxHashedBody+1))
	if err != nil {
		return "", fail(api.AuthIncomplete, "reading the body to check its hash: %v", err)
	}
	if len(b) > maxHashedBody {
		return "", fail(api.AuthIncomplete, "a body of more than %d bytes must be sent with X-Amz-Content-Sha256: %s", maxHashedBody, unsignedPayload)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// resign signs a copy of r made of exactly what sig says was signed, and returns the
// signature the client must have sent.
func (v *Verifier) resign(r *http.Request, sig signature, key Key, payloadHash string) (string, error) {
	u := *r.URL
	c := &http.Request{Method: r.Method, URL: &u, Host: r.Host, Header: http.Header{}}
	for _, h := range sig.signedHeaders {
		switch h {
		case "host":
		case "content-length":
			c.ContentLength = r.ContentLength
		default:
			if vals := r.Header.Values(h); len(vals) > 0 {
				c.Header[http.CanonicalHeaderKey(h)] = vals
			} else {
				// Signed but absent: the copy lacks it too, so the signed header lists
				// differ and the signature cannot match. Say why.
				return "", fail(api.AuthBadSignature, "the signed header %s is not in the request", h)
			}
		}
	}
	creds := aws.Credentials{AccessKeyID: key.AccessKeyID, SecretAccessKey: key.SecretAccessKey}
	if sig.presigned {
		q := u.Query()
		q.Del("X-Amz-Signature")
		u.RawQuery = q.Encode()
		signed, _, err := v.presigner.PresignHTTP(context.Background(), creds, c, payloadHash, sig.service, sig.region, sig.date)
		if err != nil {
			return "", fmt.Errorf("re-signing: %w", err)
		}
		su, err := url.Parse(signed)
		if err != nil {
			return "", fmt.Errorf("re-signing: %w", err)
		}
		return su.Query().Get("X-Amz-Signature"), nil
	}
	if err := v.signer.SignHTTP(context.Background(), creds, c, payloadHash, sig.service, sig.region, sig.date); err != nil {
		return "", fmt.Errorf("re-signing: %w", err)
	}
	_, after, _ := strings.Cut(c.Header.Get("Authorization"), "Signature=")
	return after, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
