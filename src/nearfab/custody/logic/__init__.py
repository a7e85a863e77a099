"""Pure custody logic: EPCIS event hash, Digital Link normalisation, EPCIS event building,
the ledger's hash chain and the verification decision."""
