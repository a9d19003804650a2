# Deploy template.yaml to LocalStack through CloudFormation (SAM transform run by CloudFormation itself).
# Included by the top-level Makefile (PY and the targets venv, localstack-venv, sam, build come from there and
# mk/*.mk). Prerequisites name those targets, not $(VENV)-style paths: this file may be read before they are set.
#
#   make deploy-local [STACK=stepchain] [PARAMS='Transport=sqs ApiAuth=apikey'] [ENDPOINT=http://127.0.0.1:4566]
#   make destroy-local [STACK=stepchain]
#
# Without ENDPOINT (and AWS_ENDPOINT_URL), the Docker-free LocalStack of `make localstack-up` is started
# (idempotent) and used. With stock LocalStack in Docker, pass its ENDPOINT. See tools/deploy_local.py.
STACK ?= stepchain
PARAMS ?=
SETS ?=
ENDPOINT ?=
DEPLOY_TIMEOUT ?= 600

.PHONY: deploy-local destroy-local api-key

deploy-local: venv localstack-venv sam build ## deploy to LocalStack: STACK=, PARAMS='Transport=sqs ApiAuth=apikey', ENDPOINT=
	@if [ -z "$(ENDPOINT)" ] && [ -z "$$AWS_ENDPOINT_URL" ]; then $(MAKE) --no-print-directory localstack-up; fi
	SETS='$(SETS)' $(PY) -m tools.deploy_local --stack '$(STACK)' --params '$(PARAMS)' \
		--timeout $(DEPLOY_TIMEOUT) $(if $(ENDPOINT),--endpoint '$(ENDPOINT)')

destroy-local: venv ## delete a stack deployed with deploy-local (STACK=, ENDPOINT=)
	$(PY) -m tools.deploy_local --stack '$(STACK)' --delete $(if $(ENDPOINT),--endpoint '$(ENDPOINT)')

api-key: venv ## ApiAuth=apikey: a new API key for a team or caller in the stack's usage plan (STACK=, NAME=, ENDPOINT=)
	@test -n "$(NAME)" || { echo "usage: make api-key NAME=<team> [STACK=stepchain] [ENDPOINT=...]"; exit 2; }
	$(PY) -m tools.api_keys --stack '$(STACK)' --name '$(NAME)' $(if $(ENDPOINT),--endpoint '$(ENDPOINT)')
