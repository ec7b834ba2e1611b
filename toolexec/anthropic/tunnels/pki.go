package tunnels

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority generated here: its certificate and its
// ECDSA P-256 key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// GenerateCA creates a self-signed CA certificate with an ECDSA P-256 key,
// valid from now (minus five minutes of clock skew) for validity. It can
// sign server and client certificates only (path length 0).
func GenerateCA(commonName string, validity time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, errors.New("tunnels: CA: empty common name")
	}
	if validity <= 0 {
		return nil, fmt.Errorf("tunnels: CA: validity %v is not positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA reads a CA certificate and its private key from PEM files, as
// written by [CA.WriteFiles] (the key as PKCS #8).
func LoadCA(certFile, keyFile string) (*CA, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tunnels: %w", err)
	}
	block, _ := pem.Decode(cb)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("tunnels: %s: no PEM CERTIFICATE block", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tunnels: %s: %w", certFile, err)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tunnels: %w", err)
	}
	kblock, _ := pem.Decode(kb)
	if kblock == nil || kblock.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("tunnels: %s: no PEM PRIVATE KEY (PKCS #8) block", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tunnels: %s: %w", keyFile, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("tunnels: %s: key type %T cannot sign", keyFile, k)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("tunnels: %s is not the key of %s", keyFile, certFile)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("tunnels: %s is not a CA certificate", certFile)
	}
	return &CA{Cert: cert, Key: signer}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// CertPEM returns the CA certificate as PEM: what the tunnels API registers.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Usage says what an issued certificate is for.
type Usage int

const (
	// ServerAuth is a TLS server certificate (names are DNS names or IPs).
	ServerAuth Usage = iota
	// ClientAuth is a TLS client certificate (the first name is also its
	// common name, which Perimeter's edge reads as the client's identity).
	ClientAuth
)

// Issue signs a new ECDSA P-256 key for names (DNS names, "*.domain"
// wildcards or IP addresses) and returns the certificate and key as PEM
// (the key as PKCS #8). The certificate ends when the CA does, or after
// validity if that is sooner.
func (ca *CA) Issue(usage Usage, names []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(names) == 0 {
		return nil, nil, errors.New("tunnels: issue: no names")
	}
	if validity <= 0 {
		return nil, nil, fmt.Errorf("tunnels: issue: validity %v is not positive", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	end := now.Add(validity)
	if end.After(ca.Cert.NotAfter) {
		end = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              end,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	switch usage {
	case ServerAuth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case ClientAuth:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	default:
		return nil, nil, fmt.Errorf("tunnels: issue: unknown usage %d", usage)
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("tunnels: issue: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// WriteFiles writes the CA certificate (mode 0644) and key (mode 0600, PKCS
// #8) to new files; it refuses to replace an existing file, so a CA key is
// never overwritten by mistake.
func (ca *CA) WriteFiles(certFile, keyFile string) error {
	kder, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return err
	}
	return WriteNewPair(certFile, ca.CertPEM(), keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// WriteNewPair writes a certificate (0644) and its key (0600) to files that
// must not exist yet. If the second write fails, the first file is removed.
func WriteNewPair(certFile string, certPEM []byte, keyFile string, keyPEM []byte) error {
	if err := writeNew(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certFile, certPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("tunnels: %s already exists: refusing to replace it (move it away or choose another directory)", path)
		}
		return fmt.Errorf("tunnels: %w", err)
	}
	// The umask may have cleared bits; it cannot have added any, but set
	// the mode exactly anyway.
	if err := f.Chmod(perm); err == nil {
		_, err = f.Write(data)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			return nil
		}
	} else {
		f.Close()
	}
	os.Remove(path)
	return fmt.Errorf("tunnels: write %s: %w", path, err)
}

// WriteSecretFile writes data to path with mode 0600, replacing any existing
// file atomically (a temporary file in the same directory, synced, then
// renamed), so a reader sees the old secret or the new one, never a part.
func WriteSecretFile(path string, data []byte) error {
	if err := checkSecretPath(path); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tunnels: %w", err)
	}
	tmp := f.Name()
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tunnels: write %s: %w", path, err)
	}
	return nil
}

// checkSecretPath refuses an empty path or one naming a directory, before
// any API call is made.
func checkSecretPath(path string) error {
	if path == "" {
		return errors.New("tunnels: no file given for the token")
	}
	st, err := os.Stat(path)
	switch {
	case err == nil && st.IsDir():
		return fmt.Errorf("tunnels: %s is a directory; give a file path for the token", path)
	case err == nil && !st.Mode().IsRegular():
		return fmt.Errorf("tunnels: %s is not a regular file", path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("tunnels: %w", err)
	}
	if dst, err := os.Stat(filepath.Dir(path)); err != nil || !dst.IsDir() {
		return fmt.Errorf("tunnels: directory of %s does not exist", path)
	}
	return nil
}

func serialNumber() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func keyID(pub *ecdsa.PublicKey) []byte {
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:20]
}
