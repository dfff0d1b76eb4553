package testserver

import (
	"os"
)

// URIEnv names the variable that points tests at a real MongoDB.
const URIEnv = "MONGODB_URI"

// ForTests returns the server the tests run against: MONGODB_URI when set
// (embedded is then false), otherwise a new embedded server. stop ends what
// was started.
func ForTests() (uri string, embedded bool, stop func() error, err error) {
	if uri := os.Getenv(URIEnv); uri != "" {
		return uri, false, func() error { return nil }, nil
	}
	s, err := Start(Options{})
	if err != nil {
		return "", false, nil, err
	}
	return s.URI(), true, s.Close, nil
}
