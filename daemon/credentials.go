package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ebsd/ebsd/api/sigv4"
)

// generatedCredentialsFile is where the default account's credential is kept when
// none is configured: in the data directory, mode 0600, as two shell export lines so
// `. FILE` is all a user needs.
const generatedCredentialsFile = "credentials.env"

// defaultKey returns the default account's key: the configured one, or the one
// generated on a first start (created now if there is none yet). path is the file it
// came from, "" when configured.
func defaultKey(cfg config) (key sigv4.Key, path string, created bool, err error) {
	key = sigv4.Key{AccessKeyID: cfg.accessKeyID, SecretAccessKey: cfg.secretAccessKey, AccountID: cfg.accountID, Admin: true}
	if cfg.accessKeyID != "" {
		return key, "", false, sigv4.ValidKey(key)
	}
	path = filepath.Join(cfg.dataDir, generatedCredentialsFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := checkPrivate(path); err != nil {
			return key, path, false, err
		}
		key.AccessKeyID, key.SecretAccessKey, err = parseExports(b)
		if err != nil {
			return key, path, false, fmt.Errorf("%s: %w", path, err)
		}
		return key, path, false, sigv4.ValidKey(key)
	case !errors.Is(err, fs.ErrNotExist):
		return key, path, false, err
	}
	key.AccessKeyID = "AKIA" + randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
	key.SecretAccessKey = randomString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
	if err := os.MkdirAll(cfg.dataDir, 0o700); err != nil {
		return key, path, false, err
	}
	if err := writeFileAtomic(path, []byte(exportLines(key)), 0o600); err != nil {
		return key, path, false, fmt.Errorf("keeping the generated credential: %w", err)
	}
	return key, path, true, nil
}

// exportLines are the lines that make the AWS CLI, the SDKs and ebsctl sign as key.
func exportLines(key sigv4.Key) string {
	return "export AWS_ACCESS_KEY_ID=" + key.AccessKeyID + "\nexport AWS_SECRET_ACCESS_KEY=" + key.SecretAccessKey + "\n"
}

// parseExports reads back what exportLines wrote (comments and blank lines allowed).
func parseExports(b []byte) (akid, secret string, err error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return "", "", fmt.Errorf("line %q is not export NAME=VALUE", line)
		}
		switch k {
		case "AWS_ACCESS_KEY_ID":
			akid = v
		case "AWS_SECRET_ACCESS_KEY":
			secret = v
		}
	}
	if akid == "" || secret == "" {
		return "", "", errors.New("no AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY lines")
	}
	return akid, secret, nil
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux; a key must not be weak
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// credentialsFile is the --credentials format (README "Credentials and accounts"):
//
//	{"accounts": [{"accountId": "444455556666", "admin": false,
//	  "keys": [{"accessKeyId": "AKIA…", "secretAccessKey": "…"}],
//	  "mount": {"uid": 1001, "gid": 1001, "mode": "0440"}}]}
type credentialsFile struct {
	Accounts []accountEntry `json:"accounts"`
}

type accountEntry struct {
	AccountID string     `json:"accountId"`
	Admin     bool       `json:"admin"`
	Keys      []keyEntry `json:"keys"`
	Mount     *mountAuth `json:"mount,omitempty"`
}

type keyEntry struct {
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
}

// mountAuth is who may read an account's directory in the FUSE mount (with
// --mount-allow-other). Unset fields are the daemon's user and 0400.
type mountAuth struct {
	UID  *uint32 `json:"uid,omitempty"`
	GID  *uint32 `json:"gid,omitempty"`
	Mode string  `json:"mode,omitempty"`
}

// account is one account as the daemon knows it after loading.
type account struct {
	id    string
	admin bool
	uid   uint32
	gid   uint32
	mode  uint32
}

// loadCredentials reads the --credentials file: the keys it adds and the accounts it
// names. The file must be readable by its owner only.
func loadCredentials(path string) ([]sigv4.Key, []account, error) {
	if err := checkPrivate(path); err != nil {
		return nil, nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f credentialsFile
	if err := dec.Decode(&f); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	var keys []sigv4.Key
	var accounts []account
	seen := map[string]bool{}
	for _, a := range f.Accounts {
		if !sigv4.ValidAccountID(a.AccountID) {
			return nil, nil, fmt.Errorf("%s: account id %q is not 12 digits", path, a.AccountID)
		}
		if seen[a.AccountID] {
			return nil, nil, fmt.Errorf("%s: account %s is listed twice", path, a.AccountID)
		}
		seen[a.AccountID] = true
		acct := account{id: a.AccountID, admin: a.Admin, uid: uint32(os.Getuid()), gid: uint32(os.Getgid()), mode: 0o400}
		if m := a.Mount; m != nil {
			if m.UID != nil {
				acct.uid = *m.UID
			}
			if m.GID != nil {
				acct.gid = *m.GID
			}
			if m.Mode != "" {
				mode, err := strconv.ParseUint(m.Mode, 8, 32)
				if err != nil || mode&^0o777 != 0 {
					return nil, nil, fmt.Errorf("%s: account %s: mount mode %q is not octal permission bits", path, a.AccountID, m.Mode)
				}
				acct.mode = uint32(mode)
			}
		}
		accounts = append(accounts, acct)
		for _, k := range a.Keys {
			keys = append(keys, sigv4.Key{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, AccountID: a.AccountID, Admin: a.Admin})
		}
	}
	return keys, accounts, nil
}

// checkPrivate refuses a secrets file that anyone but its owner may read or write.
func checkPrivate(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s holds secrets but has mode %04o: make it 0600 (chmod 600 %s)", path, perm, path)
	}
	return nil
}

// writeFileAtomic writes a file that is either absent or whole, even across a crash.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}
