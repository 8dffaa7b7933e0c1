package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Authority holds the NATS operator, the account Herald and every service
// live in, and the system account, and signs their JWTs. The broker
// trusts the operator (NATS's decentralised JWT authentication) and keeps
// account JWTs in a full account resolver, the same in one embedded
// server and in a cluster; an account JWT pushed to it (revocations) takes
// effect on every server without a restart.
//
// The keys are files in the authority's directory, readable by the owner
// only: whoever reads them can mint credentials.
type Authority struct {
	dir               string
	operator, account nkeys.KeyPair
	system            nkeys.KeyPair
	opJWT             string
	accPub, sysPub    string
}

type keyFile struct {
	Operator string `json:"operator"`
	Account  string `json:"account"`
	System   string `json:"system"`
}

// OpenAuthority opens the authority kept in dir, creating its keys on
// first use.
func OpenAuthority(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	path := filepath.Join(dir, "keys.json")
	var kf keyFile
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if kf, err = newKeyFile(); err != nil {
			return nil, err
		}
		out, _ := json.MarshalIndent(kf, "", "  ")
		if err := writeFile(path, out); err != nil {
			return nil, fmt.Errorf("auth: write %s: %w", path, err)
		}
	case err != nil:
		return nil, fmt.Errorf("auth: %w", err)
	default:
		if err := json.Unmarshal(b, &kf); err != nil {
			return nil, fmt.Errorf("auth: %s: %w", path, err)
		}
	}
	a := &Authority{dir: dir}
	for _, k := range []struct {
		seed string
		dst  *nkeys.KeyPair
	}{{kf.Operator, &a.operator}, {kf.Account, &a.account}, {kf.System, &a.system}} {
		kp, err := nkeys.FromSeed([]byte(k.seed))
		if err != nil {
			return nil, fmt.Errorf("auth: %s: %w", path, err)
		}
		*k.dst = kp
	}
	a.accPub, _ = a.account.PublicKey()
	a.sysPub, _ = a.system.PublicKey()
	opPub, _ := a.operator.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "herald"
	oc.SystemAccount = a.sysPub
	if a.opJWT, err = oc.Encode(a.operator); err != nil {
		return nil, fmt.Errorf("auth: operator JWT: %w", err)
	}
	return a, nil
}

func newKeyFile() (keyFile, error) {
	var kf keyFile
	for _, k := range []struct {
		make func() (nkeys.KeyPair, error)
		dst  *string
	}{{nkeys.CreateOperator, &kf.Operator}, {nkeys.CreateAccount, &kf.Account}, {nkeys.CreateAccount, &kf.System}} {
		kp, err := k.make()
		if err != nil {
			return kf, fmt.Errorf("auth: create key: %w", err)
		}
		seed, _ := kp.Seed()
		*k.dst = string(seed)
	}
	return kf, nil
}

// writeFile writes b to path, readable by the owner only, atomically.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Revocations returns the revoked user keys with the time before which
// their JWTs are refused (unix seconds).
func (a *Authority) Revocations() (map[string]int64, error) {
	out := map[string]int64{}
	b, err := os.ReadFile(filepath.Join(a.dir, "revocations.json"))
	if errors.Is(err, os.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("auth: revocations.json: %w", err)
	}
	return out, nil
}

// SaveRevocations records the revocations for the next start.
func (a *Authority) SaveRevocations(r map[string]int64) error {
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := writeFile(filepath.Join(a.dir, "revocations.json"), b); err != nil {
		return fmt.Errorf("auth: save revocations: %w", err)
	}
	return nil
}

// AccountName is the name of the account Herald's topics live in.
const AccountName = "HERALD"

// AccountJWT returns the account JWT with revocations (user public key to
// the time before which its JWTs are revoked, unix seconds).
func (a *Authority) AccountJWT(revocations map[string]int64) (string, error) {
	ac := jwt.NewAccountClaims(a.accPub)
	ac.Name = AccountName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit,
		Streams: jwt.NoLimit, Consumer: jwt.NoLimit, MaxAckPending: jwt.NoLimit, MemoryMaxStreamBytes: jwt.NoLimit, DiskMaxStreamBytes: jwt.NoLimit}
	for pk, t := range revocations {
		ac.RevokeAt(pk, time.Unix(t, 0))
	}
	return ac.Encode(a.operator)
}

func (a *Authority) systemJWT() (string, error) {
	ac := jwt.NewAccountClaims(a.sysPub)
	ac.Name = "SYS"
	return ac.Encode(a.operator)
}

// ConfigureServer makes opts trust the authority: operator mode with a
// full account resolver in the authority's directory, holding the
// account JWT with the recorded revocations.
func (a *Authority) ConfigureServer(opts *server.Options) error {
	revocations, err := a.Revocations()
	if err != nil {
		return err
	}
	opClaims, err := jwt.DecodeOperatorClaims(a.opJWT)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	res, err := server.NewDirAccResolver(filepath.Join(a.dir, "accounts"), 0, time.Minute, server.NoDelete)
	if err != nil {
		return fmt.Errorf("auth: account resolver: %w", err)
	}
	accJWT, err := a.AccountJWT(revocations)
	if err != nil {
		return fmt.Errorf("auth: account JWT: %w", err)
	}
	sysJWT, err := a.systemJWT()
	if err != nil {
		return fmt.Errorf("auth: system account JWT: %w", err)
	}
	if err := res.SaveAcc(a.accPub, accJWT); err != nil {
		return fmt.Errorf("auth: store account JWT: %w", err)
	}
	if err := res.SaveAcc(a.sysPub, sysJWT); err != nil {
		return fmt.Errorf("auth: store system account JWT: %w", err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{opClaims}
	opts.SystemAccount = a.sysPub
	opts.AccountResolver = res
	return nil
}

// User is a minted NATS user: its JWT and nkey seed.
type User struct {
	PublicKey string
	JWT       string
	Seed      []byte
	IssuedAt  time.Time
}

// MintUser creates a user of Herald's account named name with perms (nil:
// no restrictions).
func (a *Authority) MintUser(name string, perms *jwt.Permissions) (User, error) {
	return a.mint(a.account, name, perms)
}

func (a *Authority) mint(issuer nkeys.KeyPair, name string, perms *jwt.Permissions) (User, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return User{}, fmt.Errorf("auth: create user key: %w", err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	if perms != nil {
		uc.Permissions = *perms
	}
	// One second after any revocation issued at the same time: a
	// revocation holds JWTs issued at or before its time.
	now := time.Now()
	tok, err := uc.Encode(issuer)
	if err != nil {
		return User{}, fmt.Errorf("auth: user JWT: %w", err)
	}
	dec, err := jwt.DecodeUserClaims(tok)
	if err == nil {
		now = time.Unix(dec.IssuedAt, 0)
	}
	return User{PublicKey: pub, JWT: tok, Seed: seed, IssuedAt: now}, nil
}

// ConnectOptions returns options that connect as a fresh user of Herald's
// account without restrictions (Herald's own connections).
func (a *Authority) ConnectOptions(name string) ([]nats.Option, error) {
	u, err := a.MintUser(name, nil)
	if err != nil {
		return nil, err
	}
	return []nats.Option{nats.UserJWTAndSeed(u.JWT, string(u.Seed))}, nil
}

// PushAccount sends the account JWT with revocations to the resolver over
// nc, a connection of the system account (see SystemConnectOptions): the
// servers apply it at once, closing the connections of revoked users.
func (a *Authority) PushAccount(ctx context.Context, nc *nats.Conn, revocations map[string]int64) error {
	accJWT, err := a.AccountJWT(revocations)
	if err != nil {
		return fmt.Errorf("auth: account JWT: %w", err)
	}
	m, err := nc.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(accJWT))
	if err != nil {
		return fmt.Errorf("auth: push account JWT: %w", err)
	}
	var resp struct {
		Data *struct {
			Code int `json:"code"`
		} `json:"data"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return fmt.Errorf("auth: push account JWT: answer %q: %w", m.Data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("auth: push account JWT: %s", resp.Error.Description)
	}
	return nil
}

// SystemConnectOptions returns options that connect as a user of the
// system account, which may push account JWTs.
func (a *Authority) SystemConnectOptions() ([]nats.Option, error) {
	u, err := a.mint(a.system, "herald-system", nil)
	if err != nil {
		return nil, err
	}
	return []nats.Option{nats.UserJWTAndSeed(u.JWT, string(u.Seed))}, nil
}

// AccountPublicKey returns the public key of Herald's account (the
// account's name on the server, and its JetStream directory).
func (a *Authority) AccountPublicKey() string { return a.accPub }

// validName checks a service or user name: lowercase letters, digits, '-'
// and '_', 1 to 64 characters (it becomes part of NATS subjects).
func validName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("name %q: want 1 to 64 characters", name)
	}
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		return fmt.Errorf("name %q: use lowercase letters, digits, '-' and '_'", name)
	}
	return nil
}
