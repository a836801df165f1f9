package api

import "net/http"

// Unsigned authenticates nobody and admits every request as one admin account: what
// --auth none asks for. Signatures, if present, are not checked, and the region is
// always Region (an unverified credential scope must not choose the token scope).
// Use it only with Config.AllowedHosts set, behind a loopback listener.
type Unsigned struct {
	AccountID string
	Region    string
}

// Authenticate implements Authenticator.
func (u Unsigned) Authenticate(*http.Request, string) (Identity, error) {
	return Identity{AccountID: u.AccountID, Admin: true, Region: u.Region}, nil
}
