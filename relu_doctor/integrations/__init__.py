"""Training-framework callbacks around relu_doctor.watch; each imports its framework only when used."""
