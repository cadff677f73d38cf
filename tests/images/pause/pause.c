/*
 * The pod sandbox's process on the test nodes (what registry.k8s.io/pause does): it holds the
 * pod's namespaces and nothing else. It exits at once on SIGINT or SIGTERM, and reaps children
 * when it is PID 1 of a pod that shares its PID namespace. tests/src/images.rs builds it with
 * `gcc -static` into tests/images/pause/Dockerfile.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) {
	(void)sig;
	_exit(0);
}

static void reap(int sig) {
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction on_quit = {0};
	on_quit.sa_handler = quit;
	sigaction(SIGINT, &on_quit, NULL);
	sigaction(SIGTERM, &on_quit, NULL);
	struct sigaction on_child = {0};
	on_child.sa_handler = reap;
	on_child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
	sigaction(SIGCHLD, &on_child, NULL);
	for (;;) {
		pause();
	}
}
