// Command helper serves the embedded test server in a process of its own,
// built without the race detector: testserver.StartProcess builds and runs
// it. Its options come in the environment (see testserver.StartProcess).
package main

import "github.com/mongolock/mongolock/internal/testserver"

func main() {
	testserver.ServeIfHelper()
	panic("helper: started without testserver.StartProcess's environment")
}
