package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"

	"github.com/ebsd/ebsd/api"
	"github.com/ebsd/ebsd/api/sigv4"
	"github.com/ebsd/ebsd/fusefs"
)

// identity is who may use the daemon: the default account's key plus the accounts of
// the --credentials file, which SIGHUP reloads without dropping a request.
type identity struct {
	cfg        config
	log        *slog.Logger
	defaultKey sigv4.Key
	keys       *sigv4.Keyring
	accounts   atomic.Pointer[[]account] // from the credentials file
}

func newIdentity(cfg config, log *slog.Logger) (*identity, error) {
	key, path, created, err := defaultKey(cfg)
	if err != nil {
		return nil, fmt.Errorf("default account credential: %w", err)
	}
	id := &identity{cfg: cfg, log: log, defaultKey: key, keys: &sigv4.Keyring{}}
	if err := id.reload(); err != nil {
		return nil, err
	}
	if path != "" && cfg.auth == authSigV4 {
		verb := "using"
		if created {
			verb = "generated"
		}
		log.Info(verb+" the default account's credential; `. FILE` makes the AWS CLI, the SDKs and ebsctl sign with it",
			"file", path, "account_id", cfg.accountID, "access_key_id", key.AccessKeyID)
		// The two lines a user copies, as they are, not inside a log record.
		fmt.Fprint(os.Stderr, exportLines(key))
	}
	return id, nil
}

// reload reads the credentials file again; on any error the keys in force stay.
func (id *identity) reload() error {
	keys := []sigv4.Key{id.defaultKey}
	var accounts []account
	if id.cfg.credentialsFile != "" {
		more, accts, err := loadCredentials(id.cfg.credentialsFile)
		if err != nil {
			return fmt.Errorf("--credentials: %w", err)
		}
		keys, accounts = append(keys, more...), accts
	}
	if err := id.keys.Replace(keys); err != nil {
		return fmt.Errorf("--credentials: %w", err)
	}
	id.accounts.Store(&accounts)
	return nil
}

// mountAccounts are the accounts of the credentials file other than the default one,
// as the FUSE export shows them: a directory each, owned as the file says. Safe for
// concurrent calls (the FUSE threads): it reads one atomic snapshot of the accounts.
func (id *identity) mountAccounts() []fusefs.AccountDir {
	var out []fusefs.AccountDir
	for _, a := range *id.accounts.Load() {
		if a.id != id.cfg.accountID {
			out = append(out, fusefs.AccountDir{ID: a.id, Access: fusefs.Access{UID: a.uid, GID: a.gid, FileMode: a.mode}})
		}
	}
	return out
}

// authenticator is what the API checks requests with.
func (id *identity) authenticator() api.Authenticator {
	if id.cfg.auth == authNone {
		return api.Unsigned{AccountID: id.cfg.accountID, Region: id.cfg.region}
	}
	return sigv4.NewVerifier(id.keys, nil)
}

// allowedHosts pins the Host header when nothing else covers it (--auth none): the
// listen address, its loopback names, and --public-host.
func (id *identity) allowedHosts(addr string) []string {
	if id.cfg.auth != authNone {
		return nil
	}
	_, port, _ := net.SplitHostPort(addr)
	hosts := []string{addr, net.JoinHostPort("localhost", port), net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port)}
	if id.cfg.publicHost != "" {
		hosts = append(hosts, id.cfg.publicHost)
	}
	return hosts
}
